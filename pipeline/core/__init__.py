"""The pipeline's spine: wiring, the producer client, intake, runs, and the batch executor."""
