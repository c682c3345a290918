"""An fmtest plugin: a pipeline and a dataset that fmtest finds through entry points."""
