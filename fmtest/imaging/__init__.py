"""Image tools shared by pipelines and the run: rigid alignment to a reference (`align`), the perturbations of
the robustness suite (`perturb`), overlay thumbnails (`overlay`)."""
