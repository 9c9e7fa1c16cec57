"""Training the distilled scorer: content, corpus, teacher, student model, distillation, export.

Needs the 'train' extra (torch, onnx, scikit-image, scipy, imageio-ffmpeg, matplotlib).
Only this package imports torch; the runtime (scorers.distilled) is ONNX Runtime + numpy.
"""
