"""Pictures: learning curves and attention maps as PNG (paper Figures 3 to 5).

matplotlib draws off screen (the Agg backend); nothing here needs a display.
"""

from keras_transformer.workdir import read_history


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history_csv, png_path, loss_label="label-smoothed cross-entropy"):
    """Training and validation loss, and validation BLEU, against steps and minutes.

    Args:
        history_csv: a CSV file, or a list of them, with `step`, `minutes`,
            `loss` and, when validating, `val_loss` and `val_bleu` columns:
            `train()` writes `logs/history.csv` (a row per epoch) and
            `logs/steps.csv` (every few steps); their rows are merged by step.
        png_path: str. Where to write the PNG.
        loss_label: str. What the `loss` column is, for the axis label.
    """
    paths = [history_csv] if isinstance(history_csv, str) else list(history_csv)
    rows = sorted(
        (row for path in paths for row in read_history(path) if row.get("step") is not None),
        key=lambda row: row["step"],
    )
    if not rows:
        return None

    def column(name):
        return [row.get(name) for row in rows]  # None: "NA", the key was missing that epoch

    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for col, (x_name, x_label) in enumerate((("step", "step"), ("minutes", "minutes"))):
        x = column(x_name)
        loss_axis, bleu_axis = axes[0][col], axes[1][col]
        panels = (
            (loss_axis, loss_label,
             (("loss", "training loss"), ("val_loss", "validation loss"))),
            (bleu_axis, "validation score (greedy, sample)",
             (("val_bleu", "BLEU"), ("val_chrf", "chrF"))),
        )  # fmt: skip
        for axis, y_label, curves in panels:
            for name, label in curves:
                points = [
                    (a, b) for a, b in zip(x, column(name), strict=True) if None not in (a, b)
                ]
                if points:
                    marker = "o" if len(points) <= 40 else None
                    axis.plot(*zip(*points, strict=True), marker=marker, label=label)
            axis.set_xlabel(x_label)
            axis.set_ylabel(y_label)
            if axis.get_lines():
                axis.legend()
            else:  # e.g. a log without validation BLEU
                axis.text(0.5, 0.5, "not logged", ha="center", transform=axis.transAxes)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def plot_attention(weights, source_tokens, target_tokens, png_path, title=None):
    """Attention maps, one panel per head, as in the paper's Figures 3 to 5.

    Args:
        weights: array `(heads, T, S)`: attention of target positions
            (rows) over source positions (columns).
        source_tokens, target_tokens: lists of str, the axis labels.
        png_path: str.
    """
    import numpy as np

    weights = np.asarray(weights)
    heads = weights.shape[0]
    columns = min(heads, 4)
    rows = -(-heads // columns)
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for head in range(rows * columns):
        axis = axes[head // columns][head % columns]
        if head >= heads:
            axis.axis("off")
            continue
        axis.imshow(weights[head, : len(target_tokens), : len(source_tokens)], cmap="viridis")
        axis.set_xticks(range(len(source_tokens)), source_tokens, rotation=90, fontsize=7)
        axis.set_yticks(range(len(target_tokens)), target_tokens, fontsize=7)
        axis.set_title(f"head {head + 1}", fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path
