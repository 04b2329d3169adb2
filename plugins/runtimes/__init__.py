"""Runtime libraries the compressions build on (no entry points): ``openvino`` (OpenVINO
predictor, export, checks) and ``onnxruntime`` (ONNX export and the ONNX Runtime predictor)."""
