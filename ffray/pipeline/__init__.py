"""The distributed pipeline (the only part of ffray that imports Ray).

`driver.run_swap(requests, face_options, config)` plans chunks, resumes from the ledger, runs the Ray
Data pipeline read -> detector -> swapper -> [enhancer] -> segment writer, remuxes each video as its
last chunk lands, and writes the run report. `config.PipelineConfig` holds every knob.
"""
