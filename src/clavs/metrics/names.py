"""Every metric and summary name clavs writes, defined once (run files, tables, config checks)."""

# Segmentation scores that fill accuracy matrices (x100); `acc` (clip class accuracy) is added where
# the protocol has classes.
SEGMENTATION_METRICS = ("map", "maxf", "maxf_official", "miou", "aupr", "dice", "f1")
CLASS_METRICS = ("acc",)
MATRIX_METRICS = SEGMENTATION_METRICS + CLASS_METRICS

METRIC_TITLES = {"map": "mAP", "maxf": "Max-F", "maxf_official": "Max-F (official, per batch)", "miou": "mIoU",
                 "aupr": "AUPR", "dice": "Dice", "f1": "F1", "acc": "class accuracy"}

# Keys of a continual summary (metrics/continual.py), with their titles; a_auc only for task-free runs.
SUMMARY_KEYS = (("la", "LA"), ("aa", "AA"), ("a_inc", "A_inc"), ("forgetting", "Forgetting"), ("bwt", "BWT"),
                ("fwt", "FWT"))
ANYTIME_KEY = ("a_auc", "A_auc")
