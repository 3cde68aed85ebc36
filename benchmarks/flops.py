"""Count the forward FLOPs per image of the lab's networks.

Walks the built Keras model: a multiply-add counts as 2 FLOPs, Conv and Dense
layers are counted, biases, normalisation, pooling and activations left out
(well under 1 % for these networks). Training costs about 3x the forward
FLOPs (the backward pass about 2x forward). ``benchmarks/training_speed.py``
turns these counts into achieved TFLOP/s.

Run as a script, it prints the per-layer table of a recipe's network, with the
totals of the lab's CNN and of ResNet-9 at the classic width:

    python benchmarks/flops.py
    python benchmarks/flops.py --recipe fast --width 1 --json flops.json
    python -m benchmarks.flops --recipe lab
"""

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/flops.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_json
from network.core import cli, runtime
from network.data_utils import NUM_CLASSES
from network.training.recipes import RECIPES, recipe_with

TRAIN_FLOPS_FACTOR = 3  # backward pass ~ 2x forward: training ~ 3x forward FLOPs


# --- Counting FLOPs ---------------------------------------------------------------------

def _walk_layers(model):
    """Every layer of ``model``, descending into nested models."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)
        else:
            yield layer


def _spatial(shape, data_format):
    """The spatial dimensions of a batched conv input/output shape."""
    return shape[2:] if data_format == "channels_first" else shape[1:-1]


def flops_by_layer(model):
    """Forward FLOPs per image of each Conv/Dense layer, as (name, flops) pairs.

    A multiply-add counts as 2 FLOPs. Conv: 2 * output positions * kernel size
    (k * k * C_in / groups * C_out); Dense: 2 * positions * in * out, biases,
    normalisation, pooling and activations left out (they are well under 1 %
    for these networks). Shapes come from the built model.
    """
    import keras

    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv2D)
    rows = []
    for layer in _walk_layers(model):
        if isinstance(layer, convs):
            kernel = layer.kernel.shape if isinstance(layer, convs[:3]) else \
                layer.depthwise_kernel.shape
            positions = math.prod(_spatial(layer.output.shape, layer.data_format))
            rows.append((layer.name, 2 * positions * math.prod(kernel)))
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(layer.input.shape[1:-1])
            rows.append((layer.name, 2 * positions * math.prod(layer.kernel.shape)))
    return rows


def count_flops(model):
    """Forward FLOPs per image of ``model`` (Conv and Dense layers)."""
    return sum(flops for _, flops in flops_by_layer(model))


def reference_gflops(num_class=NUM_CLASSES):
    """Forward GFLOPs per image of the lab's CNN and the classic-width ResNet-9."""
    from network.model_utils import build_model, build_resnet9

    return {
        "lab_cnn": count_flops(build_model((32, 32, 3), num_class)) / 1e9,
        "resnet9_width1": count_flops(build_resnet9((32, 32, 3), num_class, width=1.0)) / 1e9,
    }


# --- The per-layer table ------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="flops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                        help="the recipe whose network is counted (network/training/recipes.py; "
                             "default: fast)")
    parser.add_argument("--width", type=cli.positive_float,
                        help="ResNet-9 recipes: channel width multiplier (default: the recipe's)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure to this JSON file")
    args = parser.parse_args(argv)

    if args.width is not None and RECIPES[args.recipe].network != "resnet9":
        parser.error(f"--width applies to the ResNet-9 recipes only, not {args.recipe}")
    if args.json is not None:
        cli.ensure_writable_dir(parser, args.json.resolve().parent, "folder for --json")
    return args


def flops_report(args):
    """Forward FLOPs of the lab CNN, ResNet-9 and the chosen recipe's network."""
    import keras

    from network.model_utils import build_for_recipe

    recipe = recipe_with(args.recipe, width=args.width)
    model = build_for_recipe(recipe, NUM_CLASSES)
    return {"mode": "flops", "backend": keras.backend.backend(), "recipe": recipe.name,
            "width": recipe.width if recipe.network == "resnet9" else None,
            "forward_gflops_per_image": count_flops(model) / 1e9,
            "layers": [{"name": n, "gflops": f / 1e9} for n, f in flops_by_layer(model)],
            "reference_forward_gflops_per_image": reference_gflops()}


def print_flops_report(result):
    ref = result["reference_forward_gflops_per_image"]
    name = result["recipe"] + (f" (width {result['width']:g})" if result["width"] else "")
    rows = [(layer["name"], f"{layer['gflops']:.4f}") for layer in result["layers"]]
    rows += [(f"total: {name}", f"{result['forward_gflops_per_image']:.4f}"),
             ("lab CNN", f"{ref['lab_cnn']:.4f}"),
             ("ResNet-9 (64-128-256-512)", f"{ref['resnet9_width1']:.4f}")]
    print_table("Forward GFLOPs per image (training ~ 3x)", rows)


def main(argv=None):
    runtime.setup_backend_env()  # quiet start-up
    args = parse_args(argv)
    result = flops_report(args)
    print_flops_report(result)
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
