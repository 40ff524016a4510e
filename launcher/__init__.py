"""The `imagegen` console script (`api`, `worker`, `dev`, `generate`) and the embedded Redis of `imagegen dev`."""
