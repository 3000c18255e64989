"""Datasets: the canonical on-disk layout (images + masks + one COCO JSON per split),
the synthetic "shapes" generator, readers, and exporters to trainer layouts."""
