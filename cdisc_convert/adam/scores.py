"""Clinical scores the example study analyses: MELD, Child-Pugh, RAND-36 (SF-36), CLDQ and the
EQ-5D-5L index. Each is a vectorised function of the inputs in standard units, documented
with its source and convention.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

BILI_UMOL_PER_MGDL = 17.1
CREAT_UMOL_PER_MGDL = 88.4


def meld_score(bili_umol: pd.Series, inr: pd.Series, creat_umol: pd.Series, etiology: float = 1.0) -> pd.Series:
    """MELD as the registry record states it (Kamath 2001, etiology 1 for viral disease):

        R = 3.78 ln(TBIL mg/dL) + 11.2 ln(INR) + 9.57 ln(CREAT mg/dL) + 6.43 x etiology

    with the UNOS convention: bilirubin, INR and creatinine below 1.0 are taken as 1.0 and
    creatinine above 4.0 as 4.0. Inputs in SI units (umol/L) are converted with 17.1 and 88.4.
    The result is not rounded.

    >>> meld_score(pd.Series([17.1, 34.2]), pd.Series([1.0, 1.5]), pd.Series([88.4, 106.08])).round(4).tolist()
    [6.43, 15.3361]
    """
    bili = (bili_umol / BILI_UMOL_PER_MGDL).clip(lower=1.0)
    creat = (creat_umol / CREAT_UMOL_PER_MGDL).clip(lower=1.0, upper=4.0)
    inr = inr.clip(lower=1.0)
    return 3.78 * np.log(bili) + 11.2 * np.log(inr) + 9.57 * np.log(creat) + 6.43 * etiology


def child_pugh_points(bili_umol: pd.Series, albumin_gl: pd.Series, inr: pd.Series, ascites: pd.Series,
                      encephalopathy: pd.Series) -> pd.DataFrame:
    """Child-Pugh component points (1-3 each) and the total score (5-15).

    Bilirubin < 34.2 umol/L (2 mg/dL) 1, 34.2-51.3 2, > 51.3 3; albumin > 35 g/L 1, 28-35 2,
    < 28 3; INR < 1.7 1, 1.7-2.3 2, > 2.3 3; ascites NONE 1, MILD 2, MODERATE/SEVERE 3;
    encephalopathy NONE 1, GRADE 1-2 2, GRADE 3-4 3. Boundary values fall in the middle band.

    >>> p = child_pugh_points(pd.Series([20.0, 40.0, 60.0]), pd.Series([40.0, 30.0, 25.0]), pd.Series([1.2, 2.0, 2.5]),
    ...                       pd.Series(["NONE", "MILD", "SEVERE"]), pd.Series(["NONE", "GRADE 1", "GRADE 3"]))
    >>> p["CPSCORE"].tolist()
    [5.0, 10.0, 15.0]
    """
    bili = np.select([bili_umol < 34.2, bili_umol <= 51.3, bili_umol > 51.3], [1, 2, 3], np.nan)
    alb = np.select([albumin_gl > 35, albumin_gl >= 28, albumin_gl < 28], [1, 2, 3], np.nan)
    inr_p = np.select([inr < 1.7, inr <= 2.3, inr > 2.3], [1, 2, 3], np.nan)
    asc = ascites.fillna("").str.upper().map({"NONE": 1, "ABSENT": 1, "MILD": 2, "MODERATE": 3, "SEVERE": 3})
    enc = encephalopathy.fillna("").str.upper().map(
        {"NONE": 1, "GRADE 1": 2, "GRADE 2": 2, "GRADE 3": 3, "GRADE 4": 3})
    points = pd.DataFrame({"CPBILI": bili, "CPALB": alb, "CPINR": inr_p, "CPASC": asc.to_numpy(dtype=float),
                           "CPENC": enc.to_numpy(dtype=float)}, index=bili_umol.index).astype(float)
    points["CPSCORE"] = points.sum(axis=1, min_count=5)
    return points


def child_pugh_class(score: pd.Series) -> pd.Series:
    """Class A (5-6), B (7-9), C (10-15).

    >>> child_pugh_class(pd.Series([5.0, 6.0, 7.0, 9.0, 10.0, np.nan])).tolist()
    ['A', 'A', 'B', 'B', 'C', '']
    """
    return pd.Series(np.select([score <= 6, score <= 9, score <= 15], ["A", "B", "C"], ""), index=score.index)


# RAND-36 scoring (RAND Health, "36-Item Short Form Survey Scoring Instructions"):
# step 1 recodes each item to 0-100, step 2 averages the items of each scale.
RAND36_RECODE = {
    **{i: {1: 100, 2: 75, 3: 50, 4: 25, 5: 0} for i in (1, 2, 20, 22, 34, 36)},
    **{i: {1: 0, 2: 50, 3: 100} for i in range(3, 13)},
    **{i: {1: 0, 2: 100} for i in range(13, 20)},
    **{i: {1: 100, 2: 80, 3: 60, 4: 40, 5: 20, 6: 0} for i in (21, 23, 26, 27, 30)},
    **{i: {1: 0, 2: 20, 3: 40, 4: 60, 5: 80, 6: 100} for i in (24, 25, 28, 29, 31)},
    **{i: {1: 0, 2: 25, 3: 50, 4: 75, 5: 100} for i in (32, 33, 35)},
}
RAND36_SCALES = {
    "SF36PF": ("Physical Functioning", list(range(3, 13))),
    "SF36RP": ("Role Limitations Physical Health", [13, 14, 15, 16]),
    "SF36RE": ("Role Limitations Emotional Problems", [17, 18, 19]),
    "SF36VT": ("Energy/Fatigue", [23, 27, 29, 31]),
    "SF36MH": ("Emotional Well-being", [24, 25, 26, 28, 30]),
    "SF36SF": ("Social Functioning", [20, 32]),
    "SF36BP": ("Pain", [21, 22]),
    "SF36GH": ("General Health", [1, 33, 34, 35, 36]),
}


def rand36_scales(items: pd.DataFrame) -> pd.DataFrame:
    """The eight RAND-36 scale scores (0-100) from item responses in columns 1..36; each scale
    is the mean of its answered items (missing items are left out, as RAND instructs).

    >>> best = pd.DataFrame({i: [min(RAND36_RECODE[i], key=lambda k: -RAND36_RECODE[i][k])] for i in range(1, 37)})
    >>> rand36_scales(best).iloc[0].tolist()
    [100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0]
    """
    recoded = pd.DataFrame({i: pd.to_numeric(items[i], errors="coerce").map(RAND36_RECODE[i])
                            for i in RAND36_RECODE if i in items.columns}, index=items.index)
    return pd.DataFrame({code: recoded[[i for i in cols if i in recoded.columns]].mean(axis=1)
                         for code, (_name, cols) in RAND36_SCALES.items()}, index=items.index)


# CLDQ domains (Younossi et al., Gut 1999): item numbers of each domain; scores are item means (1-7).
CLDQ_DOMAINS = {
    "CLDQAS": ("Abdominal Symptoms", [1, 5, 17]),
    "CLDQFA": ("Fatigue", [2, 4, 8, 11, 13]),
    "CLDQSS": ("Systemic Symptoms", [3, 6, 21, 23, 27]),
    "CLDQAC": ("Activity", [7, 9, 14]),
    "CLDQEF": ("Emotional Function", [10, 12, 15, 16, 19, 20, 24, 25]),
    "CLDQWO": ("Worry", [18, 22, 26, 28, 29]),
}


def cldq_scores(items: pd.DataFrame) -> pd.DataFrame:
    """CLDQ domain means, the overall mean (1-7) and the total (29-203, all 29 items answered).

    >>> r = cldq_scores(pd.DataFrame({i: [7] for i in range(1, 30)}))
    >>> r[["CLDQOVR", "CLDQTOT"]].iloc[0].tolist()
    [7.0, 203.0]
    """
    numeric = items.apply(pd.to_numeric, errors="coerce")
    out = pd.DataFrame({code: numeric[cols].mean(axis=1) for code, (_n, cols) in CLDQ_DOMAINS.items()},
                       index=items.index)
    out["CLDQOVR"] = numeric[list(range(1, 30))].mean(axis=1)
    out["CLDQTOT"] = numeric[list(range(1, 30))].sum(axis=1, min_count=29)
    return out


# EQ-5D-5L value set for England (Devlin, Shah, Feng, Mulhern, van Hout. Health Economics 2018;
# 27:7-22): decrements for levels 2-5 of each dimension; index = 1 - sum of decrements.
EQ5D5L_ENGLAND = {
    "MO": (0.058, 0.076, 0.207, 0.274),
    "SC": (0.050, 0.080, 0.164, 0.203),
    "UA": (0.050, 0.063, 0.162, 0.184),
    "PD": (0.063, 0.084, 0.276, 0.335),
    "AD": (0.078, 0.104, 0.285, 0.289),
}


def eq5d5l_index(levels: pd.DataFrame) -> pd.Series:
    """EQ-5D-5L index from the England value set (Devlin et al. 2018); 11111 = 1, 55555 = -0.285.
    Missing when any dimension is missing.

    >>> eq5d5l_index(pd.DataFrame({"MO": [1, 5], "SC": [1, 5], "UA": [1, 5], "PD": [1, 5], "AD": [1, 5]})).round(3).tolist()
    [1.0, -0.285]
    """
    total = pd.Series(0.0, index=levels.index)
    for dim, decrements in EQ5D5L_ENGLAND.items():
        level = pd.to_numeric(levels[dim], errors="coerce")
        table = {1: 0.0, 2: decrements[0], 3: decrements[1], 4: decrements[2], 5: decrements[3]}
        total = total + level.map(table)
    return (1 - total).round(10)
