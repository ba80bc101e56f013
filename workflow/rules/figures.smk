# Each figure is its own target: `snakemake --cores 1 fig_accuracy` rebuilds that one alone.
for name in FIGURES:

    rule:
        name:
            f"fig_{name}"
        input:
            tables=[table_file(t, "csv") for t in TABLES],
            histories=f"{tables_dir()}/{HISTORIES}",
            table_set=f"{tables_dir()}/{TABLE_SET}",
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
