#!/usr/bin/env python3
"""Train from a mounted artifactfs store and commit the checkpoint as a new model version.

    examples/train.py MOUNT [--data NAME] [--model NAME] [--steps N] [--alias ALIAS]

Reads MOUNT/DATA/latest/features.npy and labels.npy memory-mapped (numpy.load with
mmap_mode="r": pages come straight from the mount, nothing is copied), starts from
MOUNT/MODEL/latest/weights.npy if the model has a version, runs a few steps of gradient
descent for a linear model, writes weights.npy and metrics.json into MOUNT/drafts/MODEL/ and
commits them by writing a request to the draft's .commit file. Prints the new version.

`examples/train.py --make-data DIR` writes a small features.npy / labels.npy pair to log as
a dataset first (artifactfs log DATA DIR --type dataset).
"""

import argparse
import json
import os
import sys

import numpy as np


def make_data(out, rows=4096, features=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    true_w = rng.normal(size=features).astype(np.float32)
    y = x @ true_w + 0.01 * rng.normal(size=rows).astype(np.float32)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "features.npy"), x)
    np.save(os.path.join(out, "labels.npy"), y.astype(np.float32))


def train(mount, data, model, steps, alias):
    version = os.path.join(mount, data, "latest")
    x = np.load(os.path.join(version, "features.npy"), mmap_mode="r")
    y = np.load(os.path.join(version, "labels.npy"), mmap_mode="r")
    # The version the run trained on, as W&B's use_artifact records it.
    data_ref = os.getxattr(version, "user.artifactfs.ref").decode()

    start = os.path.join(mount, model, "latest", "weights.npy")
    w = np.load(start) if os.path.exists(start) else np.zeros(x.shape[1], np.float32)

    def loss(w):
        return float(np.mean((x @ w - y) ** 2))

    before = loss(w)
    for _ in range(steps):
        grad = 2.0 / len(y) * (x.T @ (x @ w - y))
        w = (w - 0.1 * grad).astype(np.float32)
    after = loss(w)

    draft = os.path.join(mount, "drafts", model)
    if not os.path.isdir(draft):
        os.mkdir(draft)  # a draft based on the model's latest version, if it has one
    np.save(os.path.join(draft, "weights.npy"), w)
    with open(os.path.join(draft, "metrics.json"), "w") as f:
        json.dump({"loss_before": before, "loss": after, "steps": steps}, f)

    request = {
        "type": "model",
        "metadata": {"loss": after, "trained_on": data_ref},
        "description": f"{steps} steps on {data_ref}",
    }
    if alias:
        request["aliases"] = [alias]
    with open(os.path.join(draft, ".commit"), "w") as f:
        f.write(json.dumps(request))
    # The write returned: the version is durable and latest names it.
    made = os.getxattr(os.path.join(mount, model, "latest"), "user.artifactfs.ref").decode()
    print(f"{made}: loss {before:.4f} -> {after:.4f} on {data_ref}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mount", nargs="?")
    ap.add_argument("--data", default="regression")
    ap.add_argument("--model", default="linear")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--alias")
    ap.add_argument("--make-data", metavar="DIR")
    args = ap.parse_args()
    if args.make_data:
        make_data(args.make_data)
        return 0
    if not args.mount:
        ap.error("MOUNT is required")
    train(args.mount, args.data, args.model, args.steps, args.alias)
    return 0


if __name__ == "__main__":
    sys.exit(main())
