"""Running exported models with no torch: only numpy, Pillow and onnxruntime are imported here."""
