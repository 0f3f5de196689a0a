"""A local ``evaluate`` metric script (the offline stand-in for a hub metric in the tests):
the fraction of predicted items equal to the reference, for strings or tag sequences."""

import datasets
import evaluate


class TokenMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="fraction of equal items",
            citation="",
            inputs_description="predictions and references: strings, or sequences of strings",
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, scale=1.0):
        pairs = [(p, r) for pred, ref in zip(predictions, references)
                 for p, r in (zip(pred, ref) if isinstance(pred, list) else [(pred, ref)])]
        return {"accuracy": scale * sum(p == r for p, r in pairs) / len(pairs), "detail": {"n": len(pairs)}}
