"""booktools.dashboard: the reproduction dashboard's tables from committed notebooks, timings and bench targets."""


from booktools import dashboard

BENCH = {"machine": "2-core x86_64 (AVX2)", "threads": 1,
         "cases": [{"module": "vq", "case": "N=100k", "comparison": "native ip vs faiss IndexFlatIP", "ratio": "1.40x"}],
         "targets": [
             {"module": "vq", "case": "N=100k, K=64, d=32", "kernel": "native ip", "peer": "faiss IndexFlatIP",
              "measured": "1.40x", "target": ">= 1.00x faiss IndexFlatIP", "hit": True, "ratio": 1.4, "why": "fused argmax"},
             {"module": "ngram", "case": "G=2, D=64, dense", "kernel": "fused", "peer": "naive", "measured": "1.00x",
              "target": ">= 1.20x naive", "hit": False, "ratio": 1.0, "why": "both pay the dense zero-fill"}]}


def test_targets_table_has_one_row_per_target_with_hit_or_miss_and_chapter_links():
    lines = dashboard.targets_markdown(BENCH)
    assert "1 of 2 hit" in lines[0]
    rows = [l for l in lines if l.startswith("| [")]
    assert len(rows) == 2
    assert "[streaming_vq](recsys/streaming_vq.ipynb)" in rows[0] and "| hit |" in rows[0]
    assert "[over_tokenized](language/over_tokenized.ipynb)" in rows[1] and "**MISS**" in rows[1]


def test_without_a_bench_run_the_page_says_so():
    assert dashboard.targets_markdown({}) == [
        "**Kernel targets:** not measured on this build (`make bench` writes them)."]


def test_the_page_holds_the_targets_table_and_every_committed_claim():
    page = dashboard.markdown(timings={}, bench=BENCH)
    assert "**Kernel targets**" in page and "1 of 2 hit" in page
    n_claims = len(dashboard.rows())
    assert page.count("\n| ") >= n_claims
