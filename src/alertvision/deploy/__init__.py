"""Deployment: trained runs as files a broker can load (ONNX with its contract inside, a model card)."""
