"""Corpus-level sacreBLEU and chrF with their signatures (paper §6.1 reports BLEU).

Scores are computed on detokenized text, as sacreBLEU expects: the
hypotheses are the `Translator`'s output and the references the raw target
side, so results compare with published sacreBLEU figures.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scores:
    """Corpus BLEU and chrF, their sacreBLEU signatures, and the exact-match rate."""

    bleu: float
    chrf: float
    exact_match: float
    bleu_signature: str
    chrf_signature: str
    sentences: int

    def lines(self):
        """Human-readable report lines."""
        return [
            f"BLEU  {self.bleu:6.2f}  {self.bleu_signature}",
            f"chrF  {self.chrf:6.2f}  {self.chrf_signature}",
            f"exact match {100 * self.exact_match:.1f}% of {self.sentences} sentences",
        ]


def score(hypotheses, references):
    """sacreBLEU's corpus BLEU (13a tokenization, case-sensitive) and chrF.

    Args:
        hypotheses: list of str.
        references: list of str, one reference per hypothesis.

    Returns:
        `Scores`.
    """
    from sacrebleu.metrics import BLEU, CHRF

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up"
        )
    if not hypotheses:
        raise ValueError("Nothing to score: no hypotheses")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return Scores(
        bleu=bleu_score.score,
        chrf=chrf_score.score,
        exact_match=exact / len(hypotheses),
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        sentences=len(hypotheses),
    )
