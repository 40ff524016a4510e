"""The HTTP API: validates requests, queues them in Redis and serves job records and images. Never imports torch."""
