"""Evaluation sets, scorers and evaluation runs of language models.

- ``cases``: the JSONL format of a set, checked line by line;
- ``sets``: registering versions of a set, content-addressed as datasets are;
- ``scorers``: every scorer, in one list (``SCORERS``);
- ``targets``: what a run evaluates (a language-model version now; prompts next);
- ``run``: loading the models as serving does, asking, scoring, storing;
- ``results``: stored runs, their summary per scorer and the comparison of two runs
  (plain data, for the CLI and for promotion gates);
- ``report``: the HTML report and the text a terminal shows.

See docs/evals.md.
"""
