"""Decoder export: SavedModel (TF Serving), TFLite / LiteRT, ONNX; each verified.

The exported decoder is deterministic: z (float32 [batch, latent_dim], plus
int32 labels [batch] for a conditional model) -> `mean` = E[x|z] in the data's
shape (pixel probabilities for a Bernoulli likelihood) and, where the
likelihood has them, `logits`. z is drawn on the host: random ops do not belong
in edge artifacts (they become Flex ops in TFLite and invalid ONNX). Only the
SavedModel, run by a server that has all of TF, also carries a `sample`
signature with the seed as an input (stateless, so one seed gives one picture).

Every artifact is run by its own runtime (the SavedModel in a Python process
where kvae cannot be imported, TFLite by ai_edge_litert, ONNX by onnxruntime)
on the same latents as the Keras decoder, and the export fails if an error
exceeds its tolerance.

    DIR/
      savedmodel/<model_name>/<version>/   TF Serving layout; assets/kvae_metadata.json
      tflite/decoder_{float32,float16,dynamic_int8,int8}.tflite
      onnx/decoder.onnx
      metadata.json                        latent dim, shapes, likelihood, kvae version, training summary
      report.json                          errors, sizes, batch-1 latency per artifact

The SavedModel's `encode` signature names the posterior's mode `mean` (the
mean for Gaussian posteriors; see `kvae.VAE.encode`), as servers already call it.

Modules: `graphs` (decoder and scorer graphs), `savedmodel`, `tflite`, `onnx`
(a writer and a runner each), `artifacts` (`export`: the verification loop and the report),
`base` (formats, tolerances, errors).
"""

from kvae.exporters.base import (FORMATS, SCORER_TFLITE_VARIANTS, TFLITE_VARIANTS, TOLERANCE, ExportError,
                                 VerificationError)
from kvae.exporters.artifacts import default_tflite_variants, export, format_report, load_source
from kvae.exporters.graphs import decode_outputs, decoder_function, scorer_function, scorer_outputs, scorer_problem
from kvae.exporters.onnx import run_onnx
from kvae.exporters.savedmodel import run_savedmodel_without_kvae
from kvae.exporters.tflite import run_tflite

__all__ = ["FORMATS", "TFLITE_VARIANTS", "SCORER_TFLITE_VARIANTS", "TOLERANCE", "ExportError", "VerificationError",
           "load_source", "decode_outputs", "decoder_function", "scorer_problem", "scorer_outputs", "scorer_function",
           "run_tflite", "run_onnx", "run_savedmodel_without_kvae", "default_tflite_variants", "export",
           "format_report"]
