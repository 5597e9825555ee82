"""SynthCue (the procedural corpus), real-dataset readers, media I/O, features, augmentations, pipelines."""
