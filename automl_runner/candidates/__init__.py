"""Candidate models: the catalogue, its GPU and PyTorch members, their search spaces and ONNX export."""
