# Each figure is its own target: `snakemake --cores 1 fig_accuracy` rebuilds that one alone.
for name in FIGURES:

    rule:
        name:
            f"fig_{name}"
        input:  # the aggregate's outputs, named by that rule
            tables=[rules.aggregate.output[t] for t in TABLES],
            histories=rules.aggregate.output.histories,
            table_set=rules.aggregate.output.table_set,
        output:
            svg=report(
                figure_file(name, "svg"),
                caption=f"../report/fig_{name}.rst",
                category="Figures",
            ),
            png=figure_file(name, "png"),
            html=figure_file(name, "html"),  # interactive; 1 MB each, kept out of the report
        log:
            f"{LOGS}/figures/{name}.log",
        benchmark:  # its wall time, for bpfree plan's forecast
            report_benchmark(f"fig_{name}")
        localrule: True  # seconds of work: on the node that runs Snakemake, never queued
        params:
            name=name,
            tables=lambda wc, input: Path(input.histories).parent,
            out_dir=lambda wc, output: Path(output.svg).parent,
        shell:
            "bpfree figures {params.name:q} --tables {params.tables:q} "
            "--out {params.out_dir:q} > {log:q} 2>&1"


rule figures:
    input:
        all_figures(),
    localrule: True
