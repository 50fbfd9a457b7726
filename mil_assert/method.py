"""A methods paragraph and BibTeX for a paper, generated from a report.

The paragraph states what was run (tool, version, commit, tests with their citations,
budget, seeds, device) and how to reproduce it; every number comes from the report.
"""

from __future__ import annotations

from typing import Any

from mil_assert import verdict
from mil_assert.defaults import INSTANCE_DIM
from mil_assert.report import report_models
from mil_assert.synthetic import TESTS

TEST_CITATIONS = {
    "single_concept": "Algorithm 1 of \\citet{raff2023reproducibility}",
    "threshold_poisoned": "Algorithm 2 of \\citet{raff2023reproducibility}",
    "false_frequency": "Algorithm 3 of \\citet{raff2023reproducibility}",
    "label_swap": "a label-swapped variant of Algorithm 1, after the asymmetry argument of "
                  "\\citet{raff2023reproducibility}",
}

BIBTEX = r"""@inproceedings{raff2023reproducibility,
  title     = {Reproducibility in Multiple Instance Learning: A Case For Algorithmic Unit Tests},
  author    = {Raff, Edward and Holt, James},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023},
  note      = {arXiv:2310.17867}
}

@article{dietterich1997solving,
  title   = {Solving the multiple instance problem with axis-parallel rectangles},
  author  = {Dietterich, Thomas G. and Lathrop, Richard H. and Lozano-P{\'e}rez, Tom{\'a}s},
  journal = {Artificial Intelligence},
  volume  = {89},
  number  = {1-2},
  pages   = {31--71},
  year    = {1997}
}

@article{foulds2010review,
  title   = {A review of multi-instance learning assumptions},
  author  = {Foulds, James and Frank, Eibe},
  journal = {The Knowledge Engineering Review},
  volume  = {25},
  number  = {1},
  pages   = {1--25},
  year    = {2010}
}

@article{hanley1982meaning,
  title   = {The meaning and use of the area under a receiver operating characteristic
             ({ROC}) curve},
  author  = {Hanley, James A. and McNeil, Barbara J.},
  journal = {Radiology},
  volume  = {143},
  number  = {1},
  pages   = {29--36},
  year    = {1982}
}

@misc{mil_assert,
  author = {{mil-assert developers}},
  title = {mil-assert: algorithmic unit tests for deep Multiple Instance Learning models},
  howpublished = {Python package, version VERSION},
  version = {VERSION},
  year = {2026},
  note = {Apache-2.0}
}
"""


def _tex(name: str) -> str:
    return name.replace("_", "\\_")


def weight_decay_note(budget: dict[str, Any]) -> str:
    """``", weight decay 1e-05"`` for a budget with one, else nothing."""
    return f", weight decay {budget['weight_decay']:g}" if budget.get("weight_decay") else ""


def method_text(report: dict[str, Any]) -> str:
    """A methods paragraph in LaTeX-ready prose, with its reproduction command."""
    env = report["environment"]
    budget = report["budget"]
    tests = list(dict.fromkeys(r["test"] for r in report["results"]))
    models = report_models(report)
    seeds = report["seeds"]
    sources = sources_of(report)
    commit = ""
    if len(sources) > 1:
        commit = ", commits " + "; ".join(f"{c[:10]} ({', '.join(map(_tex, m))})"
                                          for c, m in sources if c)
    elif env.get("git_commit"):
        commit = f", commit {env['git_commit'][:10]}"
    rejudged = (report.get("rejudged") or {}).get("by") or {}
    if rejudged.get("git_commit"):
        commit += (f", verdicts judged again without retraining by the rule of commit "
                   f"{rejudged['git_commit'][:10]}")
    described = "; ".join(f"\\texttt{{{_tex(t)}}} ({TEST_CITATIONS.get(t, t)})"
                          for t in tests)
    overrides = sorted({r["model"] for r in report["results"] if r.get("budget_overrides")})
    override_note = (f" Models with their own budget: {', '.join(overrides)} (listed in the "
                     f"report)." if overrides else "")
    rule = report["verdict_rule"]
    chance, margin = rule.get("chance", verdict.CHANCE), rule.get("margin", verdict.MARGIN)
    learned = rule.get("learned_auc", verdict.LEARNED_AUC)
    inverted_below = chance - margin
    unlearnable = [t for t in tests if t in TESTS and TESTS[t].kind == "unlearnable"]
    unlearnable_names = ", ".join("\\texttt{" + _tex(t) + "}" for t in unlearnable)
    unlearnable_note = (
        f" On {unlearnable_names}, whose rule no "
        f"MIL model can represent, a seed shows a violation when its held-out AUC exceeds "
        f"{chance + margin:g}, and a seed that learns "
        f"neither that rule nor its capacity control (the same bags with the labels "
        f"unswapped, validation AUC below {learned:g}) counts as "
        f"unlearned." if unlearnable else "")
    partial = [(t, report["tests"][t]["partial_rule_auc"]) for t in tests
               if (report.get("tests") or {}).get(t, {}).get("partial_rule_auc") is not None]
    partial_tests = " and ".join(f"\\texttt{{{_tex(t)}}}" for t, _ in partial)
    partial_note = (
        f" On {partial_tests}, a seed counts as having learned the rule only when its "
        f"validation AUC exceeds that of the best rule using one of the two required "
        f"concepts ({', '.join(f'{auc:.3f}' for _, auc in partial)}) by "
        f"{rule.get('partial_sds', verdict.PARTIAL_SDS):g} standard deviations "
        f"\\citep{{hanley1982meaning}}; below that, its partial rule neither passes nor "
        f"fails." if partial and "partial_sds" in rule else "")
    paragraph = (
        f"We tested {len(models)} model(s) for compliance with the multiple instance "
        f"learning (MIL) assumptions \\citep{{dietterich1997solving,foulds2010review}} with "
        f"mil-assert {env.get('mil_assert', '?')}{commit} \\citep{{mil_assert}}, which "
        f"implements the algorithmic unit tests of \\citet{{raff2023reproducibility}}: "
        f"{described}. Each model was trained from scratch on {budget['n_train_bags']} "
        f"synthetic training bags of {report['instance_dim']}-dimensional instances for "
        f"{budget['epochs']} epochs (batch size {budget['batch_size']}, "
        f"{budget['optimizer']}, learning rate {budget['lr']:g}"
        f"{weight_decay_note(budget)}), independently for each "
        f"of {len(seeds)} seeds ({', '.join(map(str, seeds))}), which seed the data, the "
        f"initial weights and the batch order; it was scored by ROC AUC on "
        f"{budget['n_eval_bags']} fresh validation bags from the training distribution and "
        f"{budget['n_eval_bags']} test bags from the shifted test distribution."
        f"{override_note} On a test with a distribution shift, a seed shows a violation "
        f"when its test AUC falls below "
        f"{inverted_below:g} or, after learning (validation AUC at least "
        f"{learned:g}), drops by more than "
        f"{rule.get('max_drop', verdict.MAX_DROP):g}.{unlearnable_note}{partial_note} A test is "
        f"violated "
        f"when at least {rule.get('violating_seeds', verdict.VIOLATING_SEEDS)} seeds show a "
        f"violation. Runs used PyTorch "
        f"{env.get('torch', '?')} and Python {env.get('python', '?')} on "
        f"{env.get('device', '?')}."
    )
    dim = report.get("instance_dim", INSTANCE_DIM)

    def reproduce(names: list[str]) -> str:
        return (f"pytest --pyargs mil_assert.compliance --mil-model={','.join(names)} "
                f"--mil-seeds={len(seeds)}" + (f" --mil-dim={dim}" if dim != INSTANCE_DIM
                                               else "") + " --mil-report=report.json")

    version = str(env.get("mil_assert", "?"))
    if len(sources) > 1:
        return (paragraph + f"\n\nTo reproduce (with mil-assert {version} at each commit "
                f"installed):\n\n" + "".join(f"    # at commit {c}\n    {reproduce(m)}\n"
                                              for c, m in sources))
    return (paragraph + "\n\nTo reproduce (with mil-assert " + version
            + (f" at commit {env['git_commit']}" if env.get("git_commit") else "")
            + f" installed):\n\n    {reproduce(models)}\n")


def sources_of(report: dict[str, Any]) -> list[tuple[str | None, list[str]]]:
    """``(commit, models)`` per report a merged report was made from, models in matrix
    order (one entry, the report's own commit and models, for a report that was not
    merged)."""
    order = report_models(report)
    merged = [entry for entry in report.get("merged_from") or () if entry.get("models")]
    if not merged:
        return [(report["environment"].get("git_commit"), order)]
    by_commit: dict[str | None, set[str]] = {}
    for entry in merged:
        by_commit.setdefault(entry["environment"].get("git_commit"), set()).update(
            entry["models"])
    return [(commit, [m for m in order if m in names]) for commit, names in by_commit.items()]


def bibtex(report: dict[str, Any]) -> str:
    """BibTeX entries for the citations of :func:`method_text`."""
    return BIBTEX.replace("VERSION", str(report["environment"].get("mil_assert", "")))
