"""The run: planning cases (`plan`), datasets, groups and fitted pipelines (`evaluator`), predicting through
the cache (`cache`) and an executor (`executors`), data-quality guardrails (`guardrails`), and each case's
measured rows (`evaluate`). It judges nothing: the verdict layer does."""
