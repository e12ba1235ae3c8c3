"""Layer 6, orchestration: run folders, bundle runs, the single-case pipeline, the paper's experiment and the report."""
