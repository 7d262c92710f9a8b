"""Regenerates the image figures of the docs and the numbers of docs/images.md, and (with --evaluate) pixel flipping
of LRP against Grad-CAM and CAM in docs/faithfulness.md.

    python scripts/image_docs.py                # needs Fashion-MNIST (lrptext data fetch fashion-mnist)
    python scripts/image_docs.py --evaluate     # also pixel flipping (a few minutes on 2 cores)
    python scripts/image_docs.py --render       # only rewrite the faithfulness section from the JSON

Figures: docs/fashion-heatmaps.png (three composites, as in the README), docs/compare-fashion.png (the bundled
Fashion-MNIST CNN) and docs/compare-digits.png (the digits CNN of the benchmarks, W4, trained here on
scikit-learn's 8x8 digits, seeded): input, four LRP composites, Grad-CAM. Numbers: docs/gradcam.json (where LRP
and Grad-CAM put their evidence; with --evaluate the pixel-flipping curves of the Fashion-MNIST CNN and of a
ResNet-style digits model, whose global average pooling CAM needs), and the section of docs/faithfulness.md
between its markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import environment  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lrptext.datasets import cache_dir  # noqa: E402
from lrptext.datasets.images import load_digits, load_images  # noqa: E402
from lrptext.evaluation.pixels import _regions  # noqa: E402
from lrptext.image import ImageClassifier, compare, grid, heatmap, save_png, to_rgb, upscale  # noqa: E402

DOCS = ROOT / "docs"
RESULTS = DOCS / "gradcam.json"
HEATMAP_COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
COMPARED = ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")
EVALUATED = ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat", "lrp0")
BEGIN = "<!-- pixel flipping with Grad-CAM: written by scripts/image_docs.py --evaluate -->"
END = "<!-- end of the section written by scripts/image_docs.py -->"


def digits_model(arch: str) -> Path:
    """The digits CNN (W4) or a ResNet-style model trained on scikit-learn's digits, seeded, kept in the cache."""
    from lrptext.training import TrainConfig, train_images

    path = cache_dir() / "models" / f"digits-{arch}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"width": 16} if arch == "resnet" else {}
        classifier = train_images(load_digits(), TrainConfig(arch=arch, epochs=15, seed=0, progress=False), **options)
        classifier.save(path)
        print(f"trained {arch} on digits: test accuracy {classifier.metadata['test_accuracy']:.4f} -> {path}")
    return path


def fashion_heatmaps(classifier: ImageClassifier, images: np.ndarray) -> None:
    tiles = []
    explanations = {name: classifier.explain(images, composite=name) for name in HEATMAP_COMPOSITES}
    for i in range(len(images)):
        tiles.append(upscale(to_rgb(images[i]), 6))
        tiles += [upscale(heatmap(explanations[name].relevance[i], cmap="bwr"), 6) for name in HEATMAP_COMPOSITES]
    save_png(grid(tiles, columns=1 + len(HEATMAP_COMPOSITES)), DOCS / "fashion-heatmaps.png")


def evidence(classifier: ImageClassifier, images: np.ndarray, *, region: int, top: int) -> dict:
    """Where each method puts its positive evidence: the share of it on background pixels (value 0), how many of
    Grad-CAM's `top` regions are among each composite's `top`, the share of each composite's |relevance| that is
    negative (all for the predicted class)."""
    background = torch.as_tensor(images).sum(1) == 0  # [N, H, W]
    regions = torch.from_numpy(_regions(classifier.size, region)).flatten()
    count = int(regions.max()) + 1
    maps = {name: classifier.explain(images, composite=name).relevance.sum(1) for name in COMPARED}
    post, pre = (classifier.explain_cam(images, activation=a) for a in (True, False))
    maps["gradcam"] = post.maps

    def share(m: torch.Tensor) -> float:
        positive = m.clamp(min=0)
        return float((positive * background).sum() / positive.sum())

    def ranked(m: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(m.shape[0], count, dtype=torch.float64).index_add_(1, regions, m.flatten(1).double())
        return torch.argsort(-scores, dim=1, stable=True)[:, :top]

    cam_top = ranked(maps["gradcam"])
    overlap = {name: float(np.mean([len(set(ranked(maps[name])[i].tolist()) & set(cam_top[i].tolist())) / top
                                     for i in range(len(images))])) for name in COMPARED}
    zero = {"after_activation": float((post.coarse.flatten(1).amax(1) == 0).float().mean()),
            "before_activation": float((pre.coarse.flatten(1).amax(1) == 0).float().mean())}
    return {"images": len(images), "background_pixels": float(background.float().mean()),
            "positive_evidence_on_background": {name: share(m) for name, m in maps.items()},
            "negative_share_of_relevance": {name: float(maps[name].clamp(max=0).abs().sum() / maps[name].abs().sum())
                                            for name in COMPARED},
            f"top{top}_regions_shared_with_gradcam": overlap, "all_zero_gradcam": zero,
            "gradcam_layer": post.layer, "gradcam_layer_before_activation": pre.layer,
            "gradcam_maps": list(post.coarse.shape[1:]), "region": region}


def figures() -> dict:
    classifier = ImageClassifier.load("default")
    data = load_images("fashion-mnist")
    picks = [int(np.flatnonzero(data.test_labels == label)[0]) for label in (0, 1, 7, 8, 9, 5)]
    images = data.test_images[picks]
    fashion_heatmaps(classifier, images)
    figure, explained = compare(classifier, images, composites=COMPARED, methods=["gradcam"], scale=6)
    save_png(figure, DOCS / "compare-fashion.png")
    for i, p in enumerate(picks):
        print(data.label_names[data.test_labels[p]], "->", classifier.labels[int(explained["gradcam"].target[i])])
    rng = np.random.default_rng(0)
    sample = data.test_images[rng.permutation(len(data.test_labels))[:500]]
    stats = {"fashion": evidence(classifier, sample, region=2, top=10)}

    digits = ImageClassifier.load(digits_model("digits"))
    test = load_digits()
    picks = [int(np.flatnonzero(test.test_labels == label)[0]) for label in (0, 2, 4, 7, 9)]
    figure, _ = compare(digits, test.test_images[picks], composites=COMPARED, methods=["gradcam"], scale=21)
    save_png(figure, DOCS / "compare-digits.png")
    stats["digits"] = {**evidence(digits, test.test_images, region=1, top=8),
                       "test_accuracy": digits.metadata["test_accuracy"]}
    return stats


def costs(dataset: str, model: str, methods: list[str], limit: int) -> dict[str, float]:
    """Milliseconds per explanation of each method on the evaluation's images, in batches of 256: the least of
    three timed runs after a warm-up run (graph capture, rule-modified weights and workspaces are made once per
    model, not per image; the machine is shared, so the least is the least disturbed)."""
    from lrptext.evaluation.experiment import _split_by_correctness
    from lrptext.evaluation.pixels import pixel_flipping

    data = load_images(dataset)
    classifier = ImageClassifier.load(model)
    predicted = classifier.predict(data.test_images).argmax(1).numpy()
    idx = _split_by_correctness(predicted, data.test_labels, limit, 0)["morf"]
    images, labels = data.test_images[idx], data.test_labels[idx].tolist()
    out = {}
    for method in methods:
        chosen = {"composites": [method[4:]], "baselines": []} if method.startswith("lrp:") else \
            {"composites": [], "baselines": [method]}
        runs = [pixel_flipping(classifier, images, labels, steps=1, seeds=1, progress=False, **chosen)[0]
                .seconds_per_explanation for _ in range(4)]
        out[method] = 1e3 * min(runs[1:])
    return out


def evaluate(limit: int) -> dict:
    from lrptext.evaluation.experiment import evaluate_images
    from lrptext.evaluation.report import plot

    out = {}
    runs = (("fashion", "fashion-mnist", "default", ["lrp", "gradcam", "sa", "gi", "random"], 2, 50),
            ("digits", "digits", str(digits_model("resnet")), ["lrp", "gradcam", "cam", "sa", "random"], 1, 24))
    for key, dataset, model, methods, region, steps in runs:
        began = time.perf_counter()
        curves, context = evaluate_images(dataset, model, methods=methods, composites=EVALUATED, steps=steps,
                                          region=region, fill="noise", limit=limit, seeds=5, progress=False)
        name = "Fashion-MNIST CNN" if key == "fashion" else "digits ResNet-style"
        # LRP-0's curve lies on epsilon's (the table has both)
        plot([c for c in curves if c.method != "lrp:lrp0"], DOCS / f"faithfulness-{key}-gradcam.png",
             unit=f"{region}x{region} regions", title=f"{name}, pixel flipping")
        cost = costs(dataset, model, [c.method for c in curves if c.method != "random"], limit)
        out[key] = {**context, "model": "bundled" if model == "default" else Path(model).name,
                    "methods": methods, "curves": [c.to_dict() for c in curves], "ms_per_explanation": cost,
                    "seconds": round(time.perf_counter() - began, 1)}
        print(key, "done", cost, flush=True)
    return out


def _table(curves: list[dict], marks: tuple[int, ...], cost: dict[str, float]) -> list[str]:
    lines = ["| method | AOPC | accuracy AUC | " + " | ".join(f"after {k}" for k in marks)
             + " | evaluations | ms per explanation |", "|---|---:|---:|" + "---:|" * (len(marks) + 2)]
    for c in curves:
        cells = [f"{c['accuracy'][k]:.3f}" for k in marks]
        ms = f"{cost[c['method']]:.2f}" if c["method"] in cost else "-"
        lines.append(f"| {c['method']} | {c['aopc']:.3f} | {c['accuracy_auc']:.3f} | " + " | ".join(cells)
                     + f" | {c['evaluations']} | {ms} |")
    return lines


def _findings(r: dict) -> list[str]:
    """What the numbers say, from the numbers, including where Grad-CAM or LRP does not come out ahead."""
    out = []
    for key, title in (("fashion", "Fashion-MNIST CNN"), ("digits", "Digits ResNet-style")):
        curves = {c["method"]: c for c in r[key]["curves"]}
        ms = r[key]["ms_per_explanation"]
        rnd = curves["random"]
        order = sorted((m for m in curves if m != "lrp:lrp0"), key=lambda m: -curves[m]["aopc"])  # lrp0: as epsilon
        for method in ("gradcam", "cam"):
            if method not in curves:
                continue
            c = curves[method]
            beats = c["aopc"] > rnd["aopc"] and c["accuracy_auc"] < rnd["accuracy_auc"]
            out.append(f"- {title}, {method}: AOPC {c['aopc']:.2f} against random's {rnd['aopc']:.2f}, accuracy AUC "
                       f"{c['accuracy_auc']:.3f} against {rnd['accuracy_auc']:.3f}: "
                       + ("better than random on both" if beats else "NOT better than random on both")
                       + f"; {order.index(method) + 1} of {len(order)} by AOPC (first: {order[0]}, "
                       f"{curves[order[0]]['aopc']:.2f}).")
        lrp = [m for m in curves if m.startswith("lrp:") and m != "lrp:lrp0"]
        better = [m for m in lrp if curves[m]["aopc"] > curves["gradcam"]["aopc"]]
        out.append(f"  {len(better)} of the {len(lrp)} LRP composites besides LRP-0 have a larger AOPC than "
                   "Grad-CAM here"
                   + (f" (not {', '.join(m for m in lrp if m not in better)})" if len(better) < len(lrp) else "")
                   + f"; Grad-CAM takes {ms['gradcam']:.2f} ms per image, the composites "
                   f"{min(ms[m] for m in lrp):.2f}-{max(ms[m] for m in lrp):.2f} ms.")
    same = all(abs(r[k]["curves"][0]["aopc"] - next(c["aopc"] for c in r[k]["curves"] if c["method"] == "lrp:lrp0"))
               < 5e-4 for k in ("fashion", "digits"))
    if same:
        out.append("- LRP-0 (`lrp0`, Epsilon(0) everywhere) ranks the regions as `epsilon` (ε = 1e-6) does on both "
                   "models: no neuron's z is 0 or near it on these images, so ε changes nothing.")
    return out


def render(r: dict) -> str:
    env = r["environment"]
    f, d = r["fashion"], r["digits"]
    s = r["figures"]["fashion"]
    share = s["top10_regions_shared_with_gradcam"]
    lrp_bg = [v for k, v in s["positive_evidence_on_background"].items() if k != "gradcam"]
    lines = [BEGIN, "", "## Pixel flipping: LRP against Grad-CAM and CAM", "",
             f"Generated by `python scripts/image_docs.py --evaluate` ({env['cpu']}, {env['cores']} cores shared with "
             f"other jobs, torch {env['torch']}); every number is in `docs/gradcam.json`. The same protocol as "
             "above: regions replaced by uniform noise in the order each method ranks them (its map summed over the "
             "region), relevance for the true class, the true class's logit as the score, random order averaged "
             "over 5 seeds. Grad-CAM reads the last convolution after its ReLU "
             f"(`{s['gradcam_layer']}`, {s['gradcam_maps'][0]}x{s['gradcam_maps'][1]} maps upsampled bilinearly to "
             "28x28) for the true class; CAM applies only to the digits model, which ends in global average "
             "pooling. Cost: model evaluations per explanation (a forward and a backward count as one; Grad-CAM's is "
             "one forward and one backward, LRP's one forward and one relevance pass) and milliseconds per "
             "explanation in batches of 256 on the same images, the least of three runs after a warm-up (graph "
             "capture and rule-modified weights are made once per model); on a machine shared with other jobs the "
             "times still move by tens of percent between runs.", "",
             *_findings(r),
             f"- Where Grad-CAM and LRP look (docs/images.md): of Grad-CAM's 10 highest-scoring regions, "
             f"{10 * min(share.values()):.1f}-{10 * max(share.values()):.1f} are among a composite's 10 (chance: "
             f"{100 / 196:.1f}); {100 * s['positive_evidence_on_background']['gradcam']:.0f}% of Grad-CAM's mass lies "
             f"on background pixels (value 0, {100 * s['background_pixels']:.0f}% of the pixels), against "
             f"{100 * min(lrp_bg):.0f}-{100 * max(lrp_bg):.0f}% of the composites' positive relevance. Read before "
             f"the last ReLU (`activation=False`), Grad-CAM is all zero for "
             f"{100 * s['all_zero_gradcam']['before_activation']:.0f}% of the images (after it: "
             f"{100 * s['all_zero_gradcam']['after_activation']:.1f}%); an all-zero map ranks the regions in raster "
             "order.", "",
             f"### Fashion-MNIST CNN (bundled): {f['examples']['morf']} correctly classified test images, "
             f"{f['region']}x{f['region']} regions, up to {f['steps']} of 196", "",
             "![Fashion-MNIST, LRP and Grad-CAM](faithfulness-fashion-gradcam.png)", "",
             *_table(f["curves"], (0, 10, 25, 50), f["ms_per_explanation"]), "",
             f"### Digits, ResNet-style (trained here, test accuracy {d['test_accuracy']:.4f}): "
             f"{d['examples']['morf']} correctly classified test images, single pixels, up to {d['steps']} of 64", "",
             "![Digits, LRP, Grad-CAM and CAM](faithfulness-digits-gradcam.png)", "",
             *_table(d["curves"], (0, 4, 12, 24), d["ms_per_explanation"]), "",
             "The ResNet-style model's last convolution feeds a BatchNorm and a residual sum, so Grad-CAM reads that "
             "convolution's own output (`block2.conv2`, 4x4); CAM reads the maps the global average pooling averages "
             "(after the residual ReLU), where Grad-CAM would give the same map divided by h·w = 16 and so the same "
             "ranking. LRP-0's curves lie on epsilon's and are left out of the figures.", "", END]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = DOCS / "faithfulness.md"
    doc = path.read_text()
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)].rstrip("\n") + "\n\n" + text + doc[doc.index(END) + len(END):].lstrip("\n")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", action="store_true", help="also run pixel flipping (a few minutes)")
    parser.add_argument("--limit", type=int, default=500, help="correctly classified test images per dataset")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/faithfulness.md's section")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.render:
        write_section(render(results))
        return
    results["environment"] = environment.describe()
    results["figures"] = figures()
    print(json.dumps(results["figures"], indent=2))
    if args.evaluate:
        results.update(evaluate(args.limit))
        results["figures"]["fashion"]["test_accuracy"] = results["fashion"]["test_accuracy"]
        results["digits"]["test_accuracy"] = ImageClassifier.load(digits_model("resnet")).metadata["test_accuracy"]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if "fashion" in results and "digits" in results:
        write_section(render(results))


if __name__ == "__main__":
    main()
