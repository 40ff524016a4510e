"""The contract shared by the API service and the GPU workers: schemas, settings and Redis keys."""
