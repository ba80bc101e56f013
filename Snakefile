# bpfree: the study's grid (algorithms x datasets x seeds, each BP-free method next to its
# BP twin) -> train -> aggregate. This file only loads and validates the config and
# includes one .smk per stage.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        "results/tables/summary.csv",
    default_target: True
