"""The GPU worker: loads a diffusers pipeline once, keeps it resident and serves queued jobs in-process."""
