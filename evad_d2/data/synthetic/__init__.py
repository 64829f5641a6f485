"""The bundled synthetic AVA-like dataset (``datasets/generate_ava_like.py`` is its command line).

    from evad_d2.data.synthetic import GeneratorSettings, generate
    generate("datasets/generated/ava_like", GeneratorSettings(seed=0, num_train_videos=4))
"""
from .dataset import GeneratorSettings, ensure_generated, generate, generator_sha256

__all__ = ["GeneratorSettings", "ensure_generated", "generate", "generator_sha256"]
