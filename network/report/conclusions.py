"""A first draft of the report's conclusions, written from the measured figures.

The student edits it before handing the report in; the report marks it as a
draft. Each paragraph reads one part of the run: the test accuracy against
the manual's, how training went (read from the validation curve by the rules
stated below as constants: nothing is called overfitting, a plateau or a trend
unless the numbers carry it), the classes learnt best and worst, the most confused pairs, and the
own images. Every number comes from the output folder's files.

Usage:

    from network.report.conclusions import conclusions
    paragraphs = conclusions(run, Words("en"), ClassNames("en"))
"""

SHOWN = 3                   # classes and pairs named in a sentence
NEAR_CHANCE = 3             # accuracy below 3x chance: the network has hardly learnt
# What the validation curve must show before the draft names it. Overfitting: validation
# loss above its minimum by more than OVERFIT_RISE of it, in at least OVERFIT_EPOCHS epochs
# after the best one. A smaller or shorter rise is reported as numbers, with no claim.
OVERFIT_RISE = 0.02
OVERFIT_EPOCHS = 3
# A trend: validation loss that fell by more than TREND_CHANGE of its value over the last
# TREND_EPOCHS epochs (fewer when the run was shorter) is still falling; less, it has
# levelled off.
TREND_CHANGE = 0.02
TREND_EPOCHS = 3
WIDE_GAP = 0.10             # training accuracy this far above validation is worth a remark


def conclusions(run, w, names):
    paragraphs = [accuracy(run, w), fitting(run["training"], w),
                  classes(run["per_class"], w, names), pairs(run["pairs"], w, names),
                  own_images(run["own"], w, names)]
    return [p for p in paragraphs if p]


def accuracy(run, w):
    m, manual = run["metrics"], run["manual"]
    text = [w("conclusions.accuracy", accuracy=w.pct(m["accuracy"]), images=w.int(m["images"]),
              top5=w.pct(m["top5_accuracy"]), superclass=w.pct(m["superclass_accuracy"]),
              loss=w.num(m["loss"], 3))]
    difference = m["accuracy"] - manual["accuracy"]
    side = "above" if difference > 0 else "below" if difference < 0 else "equal"
    text.append(w(f"conclusions.manual_{side}", points=w.points(difference),
                  manual=w.pct(manual["accuracy"], 2)))
    chance = 1 / run["num_classes"]
    if m["accuracy"] < NEAR_CHANCE * chance:
        text.append(w("conclusions.chance", count=run["num_classes"], chance=w.pct(chance),
                      classes=run["num_classes"]))
    return " ".join(text)


def fitting(training, w):
    """What the validation curve shows, claimed only as far as the rule constants above
    allow: overfitting, a plateau, a falling trend, or just the numbers."""
    if training is None:
        return w("conclusions.no_training")
    history, best = training["history"], training["best"]
    if best is None:
        return w("conclusions.no_validation")
    if len(history) == 1:
        return w("conclusions.one_epoch")
    overfit = overfitting(history, best)
    text = [validation_trend(history, best, overfit, w)]
    if best < len(history) - 1 and training["early_stopping"]:
        text.append(w("conclusions.kept_best", epoch=int(history.loc[best, "epoch"])))
    elif best < len(history) - 1:
        text.append(w("conclusions.kept_last", epoch=int(history.loc[best, "epoch"])))
    text.append(accuracy_gap(history.iloc[-1], overfit, w))
    return " ".join(filter(None, text))


def overfitting(history, best):
    """How many epochs after the best one kept validation loss above its minimum by more
    than OVERFIT_RISE of it, when at least OVERFIT_EPOCHS did (else 0)."""
    lowest = history["val_loss"].iloc[best]
    after = history["val_loss"].iloc[best + 1:]
    risen = int((after > lowest * (1 + OVERFIT_RISE)).sum())
    return risen if risen >= OVERFIT_EPOCHS else 0


def validation_trend(history, best, overfit, w):
    loss = history["val_loss"]
    epoch, last = int(history["epoch"].iloc[best]), len(history) - 1
    fields = {"epoch": epoch, "loss": w.num(loss.iloc[best], 4),
              "rise": w.pct(OVERFIT_RISE, 0), "last": w.num(loss.iloc[-1], 4)}
    if overfit:
        falling = history["loss"].iloc[-1] < history["loss"].iloc[best]
        key = "conclusions.overfitting" if falling else "conclusions.overfitting_plain"
        return w(key, count=overfit, after=last - best, **fields)
    if best < last:
        return w("conclusions.near_minimum", count=last - best, **fields)
    # The lowest validation loss is the last epoch's: still falling, or levelled off?
    span = min(TREND_EPOCHS, last)
    before = loss.iloc[-1 - span]
    change = (before - loss.iloc[-1]) / before
    key = "conclusions.still_falling" if change > TREND_CHANGE else "conclusions.levelled_off"
    return w(key, count=span, before=w.num(before, 4), change=w.pct(abs(change)),
             threshold=w.pct(TREND_CHANGE, 0), **fields)


def accuracy_gap(last, overfit, w):
    """Training against validation accuracy in the last epoch, as numbers; "no sign of
    overfitting" only when they are close and the loss rule found none."""
    if "accuracy" not in last or "val_accuracy" not in last:
        return ""
    gap = last["accuracy"] - last["val_accuracy"]
    key = ("conclusions.gap" if gap > WIDE_GAP else "conclusions.close_plain" if overfit
           else "conclusions.close")
    return w(key, train=w.pct(last["accuracy"]), val=w.pct(last["val_accuracy"]),
             points=w.points(gap))


def classes(per_class, w, names):
    """The best and worst classes by F1 (``per_class`` is sorted worst first)."""
    scored = [r for r in per_class if r["support"]]
    if len(scored) < 2 * SHOWN:
        return ""

    def listed(rows):
        return ", ".join(f"{names.show(r['name'])} (F1 {w.num(r['f1'], 2)})" for r in rows)

    worst_f1 = scored[0]["f1"]
    ties = [r for r in scored if r["f1"] == worst_f1]
    # Only classes learnt better than the worst count as the best.
    best = [r for r in scored[::-1][:SHOWN] if r["f1"] > worst_f1]
    text = [w("conclusions.best", classes=listed(best))] if best else []
    if len(ties) > SHOWN:
        text.append(w("conclusions.worst_shared", count=len(ties), f1=w.num(worst_f1, 2),
                      classes=", ".join(names.show(r["name"]) for r in ties[:SHOWN])))
    else:
        text.append(w("conclusions.worst", classes=listed(scored[:SHOWN])))
    return " ".join(text)


def pairs(confused, w, names):
    if not confused:
        return ""
    a, b, ab, ba, _ = confused[0]
    text = [w("conclusions.pair", a=names.show(a), b=names.show(b), count=ab + ba, ab=ab, ba=ba)]
    if len(confused) > 1:
        within = sum(same for *_, same in confused)
        text.append(w("conclusions.pairs_within", within=within, count=len(confused)))
    return " ".join(text)


def how_many(w, slot, count, total):
    """"both", "all 5", "2 of the 5", "none of them" in the words of ``slot``'s sentence."""
    if count == 0:
        return w(f"how.{slot}.none")
    if count == total:
        return w(f"how.{slot}.both") if total == 2 else w(f"how.{slot}.all", count=total)
    return w(f"how.{slot}.some", some=w.int(count), total=w.int(total))


def own_images(own, w, names):
    named = [r for r in own if r["expected"]]
    if len(named) == 1:
        r = named[0]
        verdict = (w("conclusions.own_rank", ordinal=w(f"ordinal.{r['rank']}")) if r["rank"]
                   else w("conclusions.own_not_top5"))
        return w("conclusions.own_one", name=r["name"], expected=names.show(r["expected"]),
                 verdict=verdict)
    if named:
        first = sum(r["rank"] == 1 for r in named)
        top5 = sum(bool(r["rank"]) for r in named)
        subject = how_many(w, "subject", len(named), len(own))
        if not top5:
            return w("conclusions.own_many_none", subject=subject)
        return w("conclusions.own_many", subject=subject,
                 first=how_many(w, "object", first, len(named)),
                 top5=how_many(w, "object", top5, len(named)))
    if own:
        guesses = ", ".join(f"{r['name']} \u2192 {names.show(r['top'][0][0])}" for r in own)
        return w("conclusions.own_guesses", guesses=guesses)
    return ""
