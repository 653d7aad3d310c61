"""Job recipes. Each module has `run(ctx, config)`; the worker process calls it with a JobContext."""
