# bpfree: the study's grid (each BP-free method next to its BP twin, per dataset and seed)
# -> download -> tune -> spec -> train -> aggregate -> figures, and `snakemake --report`. This
# file only loads and checks the config and includes one .smk per stage.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.utils import min_version, validate

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_yaml
from bpfree.workflow.grid import (
    check_config,
    coerce_overrides,
    job_config_file,
    register_gpus,
)

min_version("9.0")


# `--configfile X` replaces the default rather than being merged into it, so that the one
# file the jobs read is the whole configuration.
if not workflow.configfiles:

    configfile: "config/config.yaml"


try:  # one clear line, before any job is planned
    # each config file read again, with bpfree's limits (size, UTF-8, aliases bounded)
    for _file in workflow.configfiles:
        read_yaml(_file, "config")
    CONFIGFILE = job_config_file(workflow.configfiles, workflow.config_settings.config)
    # --config seeds=[1,2] arrives as strings (Snakemake's YAML base loader): as its key's type
    config.update(coerce_overrides(config, workflow.config_settings.config))
    CONFIG = check_config(
        config
    )  # typed, every default filled in (bpfree/core/spec.py)
except BpfreeError as err:
    sys.exit(f"bpfree: config error: {err}")
# the schema is generated from bpfree/core/spec.py (bpfree schema); this fills in its defaults
validate(config, "workflow/schemas/config.schema.yaml")
register_gpus(workflow, CONFIG.device)


container: CONFIG.container


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


# Only train and tune (and tune_worker) go through a cluster's scheduler: download, spec,
# aggregate and the figures are seconds of work each and run where Snakemake runs
# (`localrule: True` in their rules), so that none waits in a queue.
localrules:
    all,


rule all:
    default_target: True
    input:
        all_tables(),
        all_figures(),
