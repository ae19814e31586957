"""Faces: does a face keep its identity through the tokenizer? (TokBench's F-Sim)

For each image, faces are found on the 8-bit original at the evaluation resolution (dlib's
HOG frontal face detector), or taken from the folder's face manifest
(`tokbench.tasks.face_manifest`; boxes scaled and shifted by the resolution policy, faces a
center crop cuts are not scored). Each face gets dlib's 128-d descriptor on the original and
on the reconstruction at the original's landmarks, and their cosine similarity
(`tokbench.metrics.faces`). Scores are pooled over all faces of the dataset per size bucket
(``face_sim_small/medium/large``, TokBench's thresholds) and averaged over the buckets
(``face_sim_mean``, as TokBench's table does). The identity tokenizer scores exactly 1.

Images in which no face is found (or given) are listed in ``extra.faces_not_scored`` with
their id and are not scored.
"""
from __future__ import annotations

import numpy as np

from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.faces import (BUCKETS, DETECTOR_THRESHOLD, DETECTOR_UPSAMPLE, RATIO_EDGES, detect_faces, face_ratio,
                                    face_similarities, load_face_models, setting_for, size_bucket)
from tokbench.tasks.base import MetricContext, Pair, Task, TaskSummary, dataset_metric_entry, metric_entry

FACE_METRICS = tuple(f"face_sim_{b}" for b in (*BUCKETS, "mean"))


def mapped_boxes(pair: Pair) -> tuple[list[list[float]], list[list[float]]]:
    """Manifest boxes in the evaluated image's pixels: (inside the image, cut by the crop)."""
    top, left = pair.offset
    H, W = pair.original.shape[-2:]
    inside, cut = [], []
    for box in pair.item.meta.get("faces", []):
        x0, y0, x1, y1 = (v * pair.scale + (left if i % 2 == 0 else top) for i, v in enumerate(box))
        if x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H:
            inside.append([x0, y0, x1, y1])
        else:
            cut.append(list(box))
    return inside, cut


class FacesTask(Task):
    name, default_suite, primary = "faces", "faces", "face_sim_mean"
    headline = ("face_sim_mean", "face_sim_small", "face_sim_large")
    metrics = FACE_METRICS
    grid_caption = "original | reconstruction | difference x4 (faces task)"

    def check_applicable(self, tokenizer, cfg) -> None:
        load_face_models()  # dlib and the model files (checksums verified): say so before any work

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        models = load_face_models()
        rows = []
        for pair in pairs:
            a, b = tensor_to_uint8(pair.original), tensor_to_uint8(pair.reconstruction)
            H, W = a.shape[:2]
            given = "faces" in pair.item.meta
            if given:
                boxes, cut = mapped_boxes(pair)
            else:
                boxes, cut = detect_faces(models, a), []
            sims = face_similarities(models, a, b, boxes)
            ratios = [face_ratio(box, H, W) for box in boxes]
            faces = [{"box": [round(v, 1) for v in box], "ratio": r, "bucket": size_bucket(r, max(H, W)), "similarity": s}
                     for box, r, s in zip(boxes, ratios, sims)]
            rows.append({
                "faces_source": "manifest" if given else "detector",
                "faces_scored": len(faces),
                "faces_cropped_out": len(cut),
                "bucket_setting": setting_for(max(H, W)),
                "face_sim_image": float(np.mean(sims)) if sims else None,
                "face_similarities": " ".join(f"{s:.4f}" for s in sims),
                "face_ratios": " ".join(f"{r:.4f}" for r in ratios),
                "_faces": faces,  # private: kept in the row cache, not in per_image.csv
            })
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        summary = TaskSummary()
        pooled: dict[str, list[float]] = {b: [] for b in BUCKETS}
        not_scored = []
        for row in rows:
            for face in row.get("_faces", []):
                pooled[face["bucket"]].append(face["similarity"])
            if not row.get("_faces"):
                reason = ("the manifest gives no face for this image" if row["faces_source"] == "manifest"
                          else "no face found on the original by the detector")
                if row.get("faces_cropped_out"):
                    reason = "every face given by the manifest lies outside the evaluated crop"
                not_scored.append({"id": row["id"], "reason": reason})
            elif row.get("faces_cropped_out"):
                not_scored.append({"id": row["id"], "reason": f"{row['faces_cropped_out']} face(s) given by the "
                                                              "manifest lie outside the evaluated crop"})
        bucket_means = []
        for bucket, sims in pooled.items():
            if sims:
                summary.metrics[f"face_sim_{bucket}"] = metric_entry(f"face_sim_{bucket}", sims)
                bucket_means.append(summary.metrics[f"face_sim_{bucket}"]["mean"])
            else:
                summary.skipped_metrics[f"face_sim_{bucket}"] = f"no {bucket} faces in the dataset"
        total = sum(len(s) for s in pooled.values())
        if bucket_means:
            summary.metrics["face_sim_mean"] = dataset_metric_entry("face_sim_mean", float(np.mean(bucket_means)), total)
        else:
            summary.skipped_metrics["face_sim_mean"] = "no face was found or given in any image"
        summary.extra.update({
            "faces_per_bucket": {b: len(s) for b, s in pooled.items()},
            "faces_not_scored": not_scored,
            # TokBench's edges of the setting(s) nearest the evaluated images' longer side
            "bucket_ratio_edges": {str(s): list(RATIO_EDGES[s]) for s in sorted({r["bucket_setting"] for r in rows})},
            "detector": {"upsample": DETECTOR_UPSAMPLE, "threshold": DETECTOR_THRESHOLD},
            "face_sim_note": "per-bucket intervals are over faces; face_sim_mean averages the bucket means "
                             "(TokBench's table) and has no interval",
            "identity_bound": 1.0,
        })
        return summary
