"""The distributed pipeline (the only part of ffray that imports Ray).

`driver.run_swap(requests, face_options, config)` plans chunks, resumes from the ledger, runs the Ray
Data pipeline read -> detector -> swapper -> [enhancer] -> segment writer, remuxes each video as its
last chunk lands, and writes the run report. `config.PipelineConfig` holds every knob.

What crosses each stage boundary (decided by measurement, `benchmarks/pipeline.py`):
a row is one chunk, and its frames travel as uint8 BGR (N, H, W, 3) from the decode task through the
three face pools to the writer: H*W*3 bytes per frame at each of the four boundaries (921,600 + ~700
bytes of keys and packed faces per 640x480 frame), and ~100 bytes per frame (metadata only) leave the
writer. The alternative, dropping frames after the detector and re-decoding them in the swapper, saves
one of the four hops but costs a second decode: on the 2-core dev box decoding a 30-frame 480p chunk took
8.9 ms/frame against 1.2 ms/frame for an object-store put + remote get of the same frames, so every
stage receives the frames. Face records travel packed as plain arrays (`ffray.faces.types.pack_faces`),
never as objects; frames are never converted to float outside an actor.
"""
