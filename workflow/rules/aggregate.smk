# Every run's metrics.json and history.csv, and every study's trial table (what tuning
# cost) -> the study's tables (CSV, Markdown, LaTeX); cost.csv sets tuning next to the runs.


rule aggregate:
    input:
        metrics=all_metrics(),
        histories=all_histories(),
        trials=all_trial_tables(),
    output:
        **{
            name: report(
                table_file(name, "csv"),
                caption=f"../report/table_{name}.rst",
                category="Tables",
            )
            for name in TABLES
        },
        other=[path for path in all_tables() if not path.endswith(".csv")],
        histories=f"{tables_dir()}/{HISTORIES}",
        # written last, each table's digest: what bpfree figures checks the set against
        table_set=f"{tables_dir()}/{TABLE_SET}",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:  # its wall time, for bpfree plan's forecast
        report_benchmark("aggregate")
    localrule: True  # seconds of work: on the node that runs Snakemake, never queued
    params:
        out_dir=lambda wc, output: Path(output.summary).parent,
        trials=trials_option,
        target=CONFIG.target_fraction,  # the to_target table's target (fraction of the BP twin's best)
    shell:
        "bpfree aggregate {input.metrics:q} {params.trials:q} --target-fraction {params.target} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
