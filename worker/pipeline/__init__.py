"""The worker's diffusers code: loading, samplers, prompts, LoRA, safety, previews and generation, free of Redis.

The job runtime in `worker/` reaches it through `worker.pipeline.resident.ResidentPipeline`.
"""
