"""The prediction service: FastAPI app, model bundle, micro-batching, limits and metrics."""
