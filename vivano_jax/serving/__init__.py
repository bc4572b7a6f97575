"""Deploying a trained run: its scorer as one self-contained model, and scoring with it.

A line PC, TF Serving or any ONNX runtime gets the same scores and decisions as `vivano predict`
without the training stack. Modules, in the order a deployment is made and used:

  score_function.py  the scoring function of a checkpoint as one pure JAX function of raw uint8
                     images at the model size (JAX)
  converters.py      that function -> model.onnx (jax2onnx), saved_model/ (jax2tf) or model.jax
                     (jax.export), each with a symbolic batch size (JAX, TensorFlow, ONNX)
  model_dir.py       the exported folder: its files, model card, and loading it for scoring
                     (numpy; the runtime of the format is imported only when loaded)
  preprocess.py      images of any size -> the model's uint8 input, as the training input
                     pipeline resizes them (numpy and Pillow only)
  from_checkpoint.py `vivano predict --workdir`: scoring files with the checkpoint itself (JAX)

`vivano export-model` (export_model.py) writes a folder; `vivano predict --model` reads it.
"""
