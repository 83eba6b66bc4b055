"""The distributed pipeline (the only part of ffray that imports Ray).

`driver.run_swap(requests, face_options, config)` plans chunks, resumes from the ledger, runs the Ray
Data pipeline read -> detector -> swapper -> [enhancer] -> segment writer, remuxes each video as its
last chunk lands, and writes the run report. `config.PipelineConfig` holds every knob.

What crosses each stage boundary (decided by measurement, `benchmarks/throughput.py`): a row is one
chunk; frames never travel. The read task names the chunk; the detector decodes it and sends on the
selected faces (packed arrays, `ffray.faces.types.pack_faces`) and one patch per face
(`ffray.faces.patches`): about 10 % of a raw frame per frame at 1080p with one face, where the earlier
design sent every 6 MB frame over all four boundaries (100 %). The writer decodes the chunk a second
time (~3 ms a 1080p frame in YUV, no colour conversion) to put the patches back. Frames are never
converted to float outside an actor.
"""
