"""The ``mujun`` command line.

Every command that needs the database starts the embedded cluster on demand (unless
``DATABASE_URL`` is set) and migrates it to the current schema.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from app import db
from app.settings import get_settings

cli = typer.Typer(help="mujun 亩均论英雄: land–enterprise matching, dual ratings, GIS layers.",
                  no_args_is_help=True, add_completion=False)
db_cli = typer.Typer(help="The database (embedded PostgreSQL + PostGIS unless DATABASE_URL is set).",
                     no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]错误：[/]{message}")
    raise typer.Exit(code)


def ready_url() -> str:
    """The database URL, with the cluster running and the schema at head."""
    from app.embedded import EmbeddedError

    try:
        url = db.database_url()
        db.ensure_schema(url)
    except EmbeddedError as exc:
        fail(str(exc))
    return url


# -- mujun db ------------------------------------------------------------------------------------
@db_cli.command("start")
def db_start() -> None:
    """Start the embedded cluster (initialising it the first time) and migrate it."""
    s = get_settings()
    if not s.embedded:
        fail("已设置 DATABASE_URL：那个数据库不由 mujun 管理")
    ready_url()
    print(db.embedded_cluster(s).status().describe())


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster (its data stays)."""
    s = get_settings()
    if not s.embedded:
        fail("已设置 DATABASE_URL：那个数据库不由 mujun 管理")
    stopped = db.embedded_cluster(s).stop()
    console.print("嵌入式 PostgreSQL 已停止" if stopped else "嵌入式 PostgreSQL 本未运行")


@db_cli.command("status")
def db_status() -> None:
    """Whether the database runs, where, and on which port."""
    s = get_settings()
    if not s.embedded:
        print(f"外部数据库：{s.database_url.split('@')[-1]}")
        return
    print(db.embedded_cluster(s).status().describe())


@db_cli.command("url")
def db_url() -> None:
    """Print the database URL (starting the embedded cluster if needed)."""
    print(db.database_url())


@db_cli.command("psql")
def db_psql() -> None:
    """Open psql on the database."""
    url = db.database_url().replace("postgresql+psycopg://", "postgresql://")
    os.execvp("psql", ["psql", url])


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Run the Alembic migrations up to REVISION."""
    db.upgrade(db.database_url(), revision)


@db_cli.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="e.g. base, or a revision id")) -> None:
    """Run the Alembic migrations down to REVISION."""
    db.downgrade(db.database_url(), revision)


# -- mujun serve ---------------------------------------------------------------------------------
@cli.command()
def serve(host: str = typer.Option(None, help="default MUJUN_HOST or 127.0.0.1"),
          port: int = typer.Option(None, help="default MUJUN_PORT or 8000"),
          workers: int = typer.Option(None, help="uvicorn worker processes (default: the CPU cores this "
                                                  "process may use, at most 8)")) -> None:
    """Run the web service (OGC API Features, tiles, archives, map) with uvicorn."""
    import uvicorn

    s = get_settings()
    host = host or s.host
    port = port or s.port
    workers = workers or default_workers()
    url = ready_url()
    _print_endpoints(host, port)
    if workers > 1:
        # Worker processes build their own app from the environment: hand them the resolved URL.
        os.environ["DATABASE_URL"] = url
        uvicorn.run("app.asgi:app", host=host, port=port, workers=workers, log_level="info")
    else:
        from app.main import create_app

        uvicorn.run(create_app(database_url=url), host=host, port=port, log_level="info")


def default_workers() -> int:
    """One HTTP worker per usable core (a request is CPU work between database round trips), at
    most 8: each worker holds its own pool (2 × ``pool_size`` connections at most) and the
    embedded cluster allows 100 connections."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _print_endpoints(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    console.print(f"[bold]mujun[/] 服务已启动：{base}")
    console.print(f"  地图          {base}/map")
    console.print(f"  API 文档      {base}/docs")
    console.print(f"  QGIS          图层 ▸ 添加图层 ▸ 添加 WFS / OGC API - Features 图层 ▸ URL {base}")
    console.print(f"  健康检查      {base}/healthz")


# -- data in ------------------------------------------------------------------------------------
@cli.command()
def sample(out: Path = typer.Option(..., help="directory to write the bundle to"),
           seed: int = typer.Option(42, help="same seed, same content"),
           parcels: int = typer.Option(2000, help="number of parcels (500000 ≈ a province)"),
           fmt: str = typer.Option("county", "--format",
                                   help="county (Shapefile GBK + XLSX + CSV, as counties deliver) | gpkg | parquet")) -> None:
    """Generate a realistic import bundle for a fictional county (or a province)."""
    from app.sample import write_sample_bundle

    with _progress_bar() as bar:
        task = bar.add_task("generating", total=None)
        summary = write_sample_bundle(out, seed=seed, parcels=parcels, fmt=fmt,
                                      progress=lambda *a: bar.update(task, description=str(a[0])))
    console.print(f"示例数据包已写入 {out}")
    for k, v in summary.items():
        if isinstance(v, (int, float, str)):
            console.print(f"  {k}: {v}")


@cli.command("import")
def import_(bundle: Path = typer.Argument(..., exists=True, help="bundle directory (see data/README.md)"),
            crs: str = typer.Option(None, help="CRS for layers that lack one, e.g. EPSG:4549"),
            year: int = typer.Option(None, help="the year this land delivery is the county's land of "
                                                "(default: manifest.json, else the current land's year)"),
            partial: bool = typer.Option(None, "--partial/--complete",
                                         help="partial: only add and change land; complete (default): "
                                              "land absent from the bundle is retired from YEAR on"),
            allow_retire: bool = typer.Option(False, "--allow-retire",
                                              help="confirm a complete delivery that retires more than "
                                                   "MUJUN_RETIRE_MAX_SHARE (20 %) of the land")) -> None:
    """Import a county's bundle: all valid rows land together, rejected rows are listed.

    Exit codes: 2 bundle refused (unreadable, missing file or column, older than the current
    land), 3 imported with rejected rows, 4 refused because it would retire too much land
    (re-run with --allow-retire, or --partial)."""
    from app import jobs
    from app.ingest import RETIRE_REFUSED_EXIT, DeliveryRefused
    from spatial.io import BundleError

    ready_url()
    with _progress_bar() as bar:
        task = bar.add_task("reading", total=None)

        def progress(role, done=0, total=0):
            bar.update(task, description=f"{role}", completed=done, total=total or None)

        try:  # the same job runner as the web upload (app/jobs.py), under the county's import lock
            job = jobs.create(db.engine(), "import", {"path": str(bundle.resolve()), "crs": crs, "year": year,
                                                      "partial": partial, "allow_retire": allow_retire},
                              "cli")
            report = jobs.run(db.engine(), job, echo=progress, raise_errors=True)["outcome"]
        except DeliveryRefused as exc:
            bar.stop()
            fail(f"{exc}\n未导入任何数据 (nothing was imported).",
                 code=RETIRE_REFUSED_EXIT if exc.retire else 2)
        except BundleError as exc:
            bar.stop()
            fail(f"{exc}\n未导入任何数据（Nothing was imported）。", code=2)
    _print_import(report)
    if report.errors:
        raise typer.Exit(3)


_TABLE_ZH = {"enterprises": "企业", "parcels": "宗地", "buildings": "建筑", "metrics": "年度指标",
             "leases": "租赁", "corrections": "纠偏"}


def _print_import(report) -> None:
    import pandas as pd
    from rich.table import Table

    table = Table(title=f"导入批次 {report.batch_id}")
    for col in ("表", "新增", "更新", "未变"):
        table.add_column(col, justify="left" if col == "表" else "right")
    for name, c in report.counts.items():
        if name != "rejects":
            table.add_row(_TABLE_ZH.get(name, name), str(c["inserted"]), str(c["updated"]), str(c["unchanged"]))
    Console().print(table)
    if report.land and not report.land.get("replayed"):
        d = report.land
        print(f"{d['year']} 年土地交付（{'全量' if d['mode'] == 'complete' else '增量'}）：未变 {d['kept']}，"
              f"变更 {d['changed']}，新增 {d['new']}，分割 {d['split']}，合并 {d['merged']}，换码 {d['recoded']}，"
              f"注销 {d['retired']} 宗" + (f"，恢复 {d['revived']} 宗（曾注销的土地原码恢复）" if d.get("revived") else ""))
        if d.get("year_source") == "calendar":
            print(f"  注意：数据包未写年度（无 --year、manifest.json 与指标年份），已按当前日历年 {d['year']} 年记入；"
                  f"此后更早年度的交付会被拒收；如年度不对，请在新的数据库中用 --year 重新导入")
    print(f"拒收行 {report.errors}，警告 {report.warnings}；报告：{report.report_path}")
    # the first rejects, then the first warnings (a wrong .cpg, a 登记面积 mismatch …): the rest is in the report
    for severity, label in (("error", "拒收"), ("warning", "警告")):
        if len(report.rejects):
            for r in report.rejects[report.rejects["severity"] == severity].head(10).itertuples():
                where = f" 第 {r.row} 行" if pd.notna(r.row) and r.row > 0 else ""  # 0: the whole file
                print(f"  {label} {r.file}{where} [{r.field}]：{r.reason}")


@cli.command()
def match(rule: str = typer.Option("equal", help="split rule when no lease or building gives shares")) -> None:
    """地企对应: match enterprises to land, split shared lots, merge and apportion."""
    from app.pipeline import run_matching

    ready_url()
    with _progress_bar() as bar:
        task = bar.add_task("matching", total=None)
        report = run_matching(db.engine(), rule=rule, progress=lambda step: bar.update(task, description=step))
    print(f"地企对应 {report.links} 条；分割子宗地 {report.sublots} 块；有地企业 {report.enterprises_with_land} 家；"
          f"宗地年度指标 {report.parcel_metric_rows} 行")
    print("数据质量：" + "，".join(f"{_QUALITY_LISTS.get(k, k)} {v}" for k, v in report.quality.items())
          + f"（明细：{report.report_path}）")
    print("用时（秒）：" + "，".join(f"{k} {v}" for k, v in report.seconds.items()))


#: The quality lists of `spatial.match.land_quality_report` (and the pipeline's not-applied lists), as
#: staff call them; the sheet names in match_quality.xlsx stay the English keys.
_QUALITY_LISTS = {
    "enterprises_without_land": "无地企业", "idle_land": "无企业用地", "crowded_land": "多企共地（户数多）",
    "low_confidence_links": "低置信对应", "unknown_enterprises": "名录外企业",
    "unplaced_leases": "未落地租赁", "unapplied_corrections": "未执行纠偏",
}


land_cli = typer.Typer(help="Land over the years: compare the land of two years.", no_args_is_help=True)
cli.add_typer(land_cli, name="land")


@land_cli.command("diff")
def land_diff_(old: int = typer.Argument(..., help="the earlier year"),
               new: int = typer.Argument(..., help="the later year"),
               out: Path = typer.Option(..., help="report file: .csv or .xlsx (Chinese headers)")) -> None:
    """One row per piece of land: kept, changed, split, merged, recoded, new or retired, with
    the related codes and both years' areas (亩); a summary is printed."""
    from app.land_diff import land_diff, summary_text, write_diff

    ready_url()
    try:
        diff = land_diff(db.engine(), old, new)
        write_diff(diff, out)
    except ValueError as exc:
        fail(str(exc))
    print(summary_text(diff, old, new))
    print(f"明细 {len(diff)} 行已写入 {out}")


# -- evaluation ----------------------------------------------------------------------------------
@cli.command("evaluate")
def evaluate_(year: int = typer.Option(..., help="evaluation year"),
              scheme: str = typer.Option("zhejiang_default", help="preset name (`mujun schemes`) or YAML path"),
              publish: bool = typer.Option(False, help="publish the run right away"),
              force: bool = typer.Option(False, help="re-run even if an identical run exists")) -> None:
    """Rate enterprises and parcels for a year (a new, immutable run)."""
    from app.evaluation import evaluate_year
    from scoring import SchemeError

    ready_url()
    with _progress_bar() as bar:
        task = bar.add_task("evaluating", total=None)
        try:
            report = evaluate_year(db.engine(), year, scheme, publish=publish, force=force,
                                   progress=lambda t: bar.update(task, description=t))
        except (SchemeError, ValueError, FileNotFoundError) as exc:
            bar.stop()
            fail(str(exc))
    verb = "输入未变，沿用评价批次" if report.reused else "已新建评价批次"
    print(f"{verb} {report.run_id}（{report.scheme}，{report.year} 年）；运行哈希 {report.run_hash[:16]}")
    for kind, zh in (("enterprises", "经营主体等级"), ("parcels", "宗地等级")):
        print(f"  {zh}：" + "，".join(f"{g} {n}" for g, n in report.grades.get(kind, {}).items()))


@cli.command()
def runs() -> None:
    """List evaluation runs."""
    import sqlalchemy as sa

    ready_url()
    with db.engine().connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, year, scheme_name, scheme_version, status, left(run_hash, 12), created_at::timestamp(0) "
            "FROM evaluation_runs ORDER BY id")).all()
    for r in rows:
        print(f"{r[0]:>5}  {r[1]}  {r[2]} {r[3]:<8} {r[4]:<11} {r[5]}  {r[6]}")
    if not rows:
        print("尚无评价批次：请先运行 `mujun evaluate --year 年度`")


@cli.command()
def publish(run: int = typer.Argument(..., help="run id (`mujun runs`)")) -> None:
    """Publish a run: it becomes the one shown for its year."""
    from app.evaluation import publish_run

    ready_url()
    try:  # then the public tiles and features are rendered (app/render.py), progress in Chinese
        publish_run(db.engine(), run, progress=lambda text: console.print(f"  {text}"))
    except ValueError as exc:
        fail(str(exc))
    print(f"评价批次 {run} 已发布")


@cli.command()
def schemes(validate: list[Path] = typer.Argument(None, help="scheme YAML files to validate")) -> None:
    """List the preset evaluation schemes, or validate scheme files."""
    from scoring import SchemeError, list_presets, load_scheme

    if validate:
        bad = 0
        for path in validate:
            try:
                s = load_scheme(path)
                print(f"通过    {path}: {s.name} {s.version}")
            except SchemeError as exc:
                bad += 1
                print(f"不通过  {exc}")
        raise typer.Exit(1 if bad else 0)
    for name in list_presets():
        s = load_scheme(name)
        print(f"{name:<18} {s.version:<8} {s.title}")


@cli.command()
def explain(code: str = typer.Argument(..., help="USCC (enterprise) or 宗地身份码 / 宗地代码 (parcel)"),
            year: int = typer.Option(None, help="default: the newest year with a run")) -> None:
    """Explain a grade in plain Chinese: indicators, baselines, points, rank, rules fired."""
    import sqlalchemy as sa

    from app.api.layers import current_run_sql
    from scoring import explain_text

    ready_url()
    with db.engine().connect() as conn:
        run_id = conn.execute(sa.text(current_run_sql()), {"year": year}).scalar()
        if run_id is None:
            fail("尚无评价批次：请先运行 `mujun evaluate --year 年度`")
        row = conn.execute(sa.text(
            "SELECT 'enterprise', uscc, grade, explanation FROM enterprise_ratings WHERE run_id = :r AND uscc = :c "
            "UNION ALL SELECT 'parcel', r.identity_code, r.grade, r.explanation FROM parcel_ratings r "
            "JOIN parcels p ON p.identity_code = r.identity_code "
            "WHERE r.run_id = :r AND (r.identity_code = :c OR (p.parcel_code = :c AND p.kind = 'registered'))"),
            {"r": run_id, "c": code.strip().upper() if len(code.strip()) == 18 else code.strip()}).first()
    if row is None:
        fail(f"{code} 在评价批次 {run_id} 中没有评级")
    print(f"{row[0]} {row[1]}: {row[2] or '未评'} (run {run_id})")
    print(row[3].get("text") or explain_text(row[3]))


# -- data out ------------------------------------------------------------------------------------
@cli.command()
def export(what: str = typer.Argument(..., help="ratings | low-yield | clusters | links | parcels | enterprises | "
                                                 "sublots | rejects"),
           out: Path = typer.Option(..., help="file: .csv, .xlsx (Chinese headers) or .gpkg"),
           year: int = typer.Option(None, help="ratings: the year whose published run is listed; "
                                              "links/parcels/enterprises/sublots: the land and links of that year "
                                              "(default the current land)"),
           run: int = typer.Option(None, help="ratings: a given run instead of the published one"),
           level: str = typer.Option("enterprise", help="ratings: enterprise (经营主体) | parcel (宗地)"),
           list_name: str = typer.Option(None, "--list", help="ratings: one list only (规上, 规下 …)"),
           grades: str = typer.Option(None, help="ratings: grades to list, e.g. C,D"),
           region: str = typer.Option(None, help="ratings: one township (镇街) only"),
           county: str = typer.Option(None, help="ratings: one county (6-digit 县级行政区划代码) of a province "
                                                 "database"),
           threshold: float = typer.Option(None, help="low-yield: 亩均税收 below this (万元/亩) instead of the "
                                                     "scheme's 低产田 standard"),
           gap_m: float = typer.Option(30.0, help="clusters: largest gap (m) between parcels of one block"),
           min_area_mu: float = typer.Option(0.0, help="clusters: smallest block (亩)")) -> None:
    """Export a table for analysts (Excel) and GIS users (GeoPackage); ``ratings`` is the
    公示名单 of a year: one sheet per list, Chinese headers and values, rounded as published."""
    ready_url()
    if what == "ratings":
        from app.lists import export_ratings

        if year is None and run is None:
            fail("请用 --year 指定年份（或用 --run 指定评价批次）")
        try:
            rl = export_ratings(db.engine(), out, year=year, run_id=run, level=level, list_name=list_name,
                                grades=[g.strip() for g in grades.split(",") if g.strip()] if grades else None,
                                region=region, county=county)
        except (ValueError, LookupError) as exc:
            fail(str(exc))
        print(f"{rl.year} 年{'经营主体' if rl.level == 'enterprise' else '宗地'}名单：{len(rl.frame)} 行，"
              f"评价批次 {rl.run_id}（{rl.scheme}），已写入 {out}")
        return
    if what in ("low-yield", "clusters"):
        from app.lists import export_list

        if year is None and run is None:
            fail("请用 --year 指定年份（或用 --run 指定评价批次）")
        gl = [g.strip() for g in grades.split(",") if g.strip()] if grades else None
        kw = (dict(threshold=threshold) if what == "low-yield"
              else dict(grades=gl, gap_m=gap_m, min_area_mu=min_area_mu))
        try:
            rl = export_list(db.engine(), what, out, year=year, run_id=run, region=region, **kw)
        except (ValueError, LookupError) as exc:
            fail(str(exc))
        n = len(rl.frame) if what == "low-yield" else len(rl.clusters)
        print(f"{rl.year} 年{'低效用地' if what == 'low-yield' else '连片低效用地'}名单：{n} "
              f"{'宗' if what == 'low-yield' else '片'}，评价批次 {rl.run_id}，已写入 {out}")
        return
    from app.export import export_table

    try:
        n = export_table(db.engine(), what, out, year=year)
    except ValueError as exc:
        fail(str(exc))
    print(f"已写入 {n} 行：{out}")


report_cli = typer.Typer(help="What a bureau prints: 体检表 (one page per enterprise), the county summary.",
                         no_args_is_help=True)
cli.add_typer(report_cli, name="report")


@report_cli.command("checkups")
def report_checkups(year: int = typer.Option(..., help="evaluation year (its published run)"),
                    out: Path = typer.Option(..., help="directory for the PDFs and index.html / index.xlsx"),
                    township: str = typer.Option(None, help="one township (镇街) only"),
                    include_unrated: bool = typer.Option(False, "--include-unrated",
                                                         help="also enterprises without a grade"),
                    limit: int = typer.Option(None, help="at most this many (a sample)")) -> None:
    """体检表: one A4 PDF per enterprise of the year, plus an index."""
    ready_url()
    from app.checkup import write_checkups

    with _progress_bar() as bar:
        task = bar.add_task("体检表", total=None)
        try:
            rows = write_checkups(db.engine(), out, year=year, township=township, include_unrated=include_unrated,
                                  limit=limit, progress=lambda i, n: bar.update(task, completed=i, total=n))
        except (LookupError, ValueError) as exc:
            fail(str(exc))
    print(f"{year} 年体检表：{len(rows)} 份 PDF 已写入 {out}（索引 index.html、index.xlsx）")


@report_cli.command("summary")
def report_summary(year: int = typer.Option(None, help="evaluation year (default: the newest published)"),
                   out: Path = typer.Option(..., help="file to write: .pdf or .html")) -> None:
    """亩均效益评价汇总报告: the county's summary of a year, as the web page /reports/summary.pdf."""
    ready_url()
    from app.auth import Principal
    from app.compare import render_summary

    ext = out.suffix.lower().lstrip(".")
    if ext not in ("pdf", "html"):
        fail(f"{out}: 汇总报告只能写成 .pdf 或 .html")
    try:
        with db.engine().connect() as conn:
            body, name = render_summary(conn, Principal("admin"), year, ext)
    except LookupError as exc:
        fail(f"{exc}（先运行 mujun evaluate 并 mujun publish）")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    print(f"{name} 已写入 {out}（{len(body) / 1024:,.0f} KB）")


tiles_cli = typer.Typer(help="Vector tiles rendered once (tile_cache): build the pyramid after publishing.",
                        no_args_is_help=True)
cli.add_typer(tiles_cli, name="tiles")


@tiles_cli.command("build")
def tiles_build(maxzoom: int = typer.Option(16, help="highest zoom to render (TileJSON maxzoom is 16)"),
                year: int = typer.Option(None, help="evaluation year (default: the newest)")) -> None:
    """Render every public tile with data (z0 to maxzoom) into the tile cache, so maps read them
    instead of rendering. Publishing and importing already do this for the newest run
    (app/render.py, unless MUJUN_RENDER_AT_PUBLISH=0); use it for another --year (tiles of an
    older data version are never served, they are rendered again on request otherwise)."""
    ready_url()
    from app.api.tiles import build_pyramid

    with _progress_bar() as bar:
        task = bar.add_task("瓦片", total=maxzoom + 1)
        stats = build_pyramid(db.engine(), maxzoom=maxzoom, year=year,
                              progress=lambda layer, z, n: bar.update(task, completed=z + 1,
                                                                      description=f"瓦片 z{z}: {n}"))
    print(f"已生成 {stats['tiles']} 个瓦片（空 {stats['empty']}，已是最新 {stats['skipped']}），"
          f"{stats['bytes'] / 1e6:.1f} MB，用时 {stats['seconds']} 秒")


keys_cli = typer.Typer(help="API keys (roles: public, viewer, analyst, admin; optional township scope).",
                       no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("create")
def keys_create(role: str = typer.Option(..., help="public | viewer | analyst | admin"),
                region: str = typer.Option(None, help="township (镇街) the key is limited to; default county-wide"),
                county: str = typer.Option(None, help="county (6-digit 县级行政区划代码) the scope is limited to; needed with a township on a province database"),
                name: str = typer.Option("key", help="who or what the key is for")) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from app.auth import create_key

    ready_url()
    try:
        with db.engine().begin() as conn:
            key = create_key(conn, name, role, region, county)
            db.audit(conn, "cli", "keys.create", "api_keys", name, {"role": role, "region": region, "county": county})
    except ValueError as exc:
        fail(str(exc))
    print(key)


_ROLE_ZH = {"public": "公开", "viewer": "查看", "analyst": "分析", "admin": "管理"}


def _scope_zh(county: str | None, township: str | None) -> str:
    """A key's or user's scope as listed: 全县 / 县（区）C / C 的镇街 T (app.auth)."""
    if county is None:
        return township or "全县"
    return f"{county} {township}" if township else f"县（区）{county}"


@keys_cli.command("list")
def keys_list() -> None:
    """List the API keys (never the keys themselves): id, name, role, region, created, revoked."""
    from app.auth import list_keys

    ready_url()
    with db.engine().connect() as conn:
        rows = list_keys(conn)
    if not rows:
        print("尚无密钥（用 `mujun keys create --role viewer` 创建）")
        return
    print("编号\t名称\t角色\t范围\t创建时间\t状态")
    for r in rows:
        state = f"已吊销 {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "有效"
        print(f"{r['id']}\t{r['name']}\t{r['role']}（{_ROLE_ZH.get(r['role'], r['role'])}）\t"
              f"{_scope_zh(r['county'], r['region'])}\t{r['created_at']:%Y-%m-%d %H:%M}\t{state}")


@keys_cli.command("revoke")
def keys_revoke(key_id: int = typer.Argument(..., help="key id (`mujun keys list`)")) -> None:
    """Revoke a key: refused from the key's very next request on (no cache to wait for)."""
    from app.auth import revoke_key

    ready_url()
    with db.engine().begin() as conn:
        if not revoke_key(conn, key_id):
            fail(f"没有编号为 {key_id} 的有效密钥（`mujun keys list` 列出全部密钥）")
        db.audit(conn, "cli", "keys.revoke", "api_keys", str(key_id), {})
    print(f"密钥 {key_id} 已吊销，下一次请求起即被拒绝")


users_cli = typer.Typer(help="web users: create, list, disable (passwords stored as argon2id hashes only)")
cli.add_typer(users_cli, name="users")


@users_cli.command("create")
def users_create(username: str = typer.Argument(..., help="user name for signing in"),
                 role: str = typer.Option(..., help="viewer | officer (镇街专管员) | analyst | admin"),
                 township: str = typer.Option(None, help="township (镇街) the user is limited to; officers need one"),
                 county: str = typer.Option(None, help="county (6-digit 县级行政区划代码) the scope is limited to; needed with a township on a province database"),
                 display_name: str = typer.Option(None, help="the person's name"),
                 password: str = typer.Option(..., prompt="密码", hide_input=True, confirmation_prompt="再次输入密码",
                                              help="asked for when not given (never echoed, never logged)")) -> None:
    """Create a web user; the password is stored only as an argon2id hash."""
    from app.accounts import ROLE_ZH, create_user

    ready_url()
    try:
        with db.engine().begin() as conn:
            uid = create_user(conn, username, password, role, township, display_name, county)
            db.audit(conn, "cli", "users.create", "users", username,
                     {"role": role, "township": township, "county": county})
    except ValueError as exc:
        fail(str(exc))
    print(f"已创建用户 {username}（编号 {uid}，角色 {ROLE_ZH[role]}，范围 {_scope_zh(county, township)}）")


@users_cli.command("list")
def users_list() -> None:
    """List web users: id, name, role, township, created, last sign-in, state."""
    from app.accounts import ROLE_ZH, list_users

    ready_url()
    with db.engine().connect() as conn:
        rows = list_users(conn)
    if not rows:
        print("尚无用户（用 `mujun users create 用户名 --role analyst` 创建）")
        return
    print("编号\t用户名\t角色\t范围\t创建时间\t最近登录\t状态")
    for r in rows:
        state = f"已停用 {r['disabled_at']:%Y-%m-%d %H:%M}" if r["disabled_at"] else "有效"
        last = f"{r['last_login_at']:%Y-%m-%d %H:%M}" if r["last_login_at"] else "从未登录"
        print(f"{r['id']}\t{r['username']}\t{r['role']}（{ROLE_ZH.get(r['role'], r['role'])}）\t{_scope_zh(r['county'], r['township'])}\t"
              f"{r['created_at']:%Y-%m-%d %H:%M}\t{last}\t{state}")


@users_cli.command("disable")
def users_disable(username: str = typer.Argument(..., help="user name (`mujun users list`)")) -> None:
    """Disable a user: refused from its very next request on."""
    from app.accounts import disable_user

    ready_url()
    with db.engine().begin() as conn:
        if not disable_user(conn, username):
            fail(f"没有名为 {username} 的有效用户（`mujun users list` 列出全部用户）")
        db.audit(conn, "cli", "users.disable", "users", username, {})
    print(f"用户 {username} 已停用，下一次请求起即被拒绝")


# -- the demo ------------------------------------------------------------------------------------
@cli.command()
def demo(port: int = typer.Option(None, help="default MUJUN_PORT or 8000"),
         host: str = typer.Option(None, help="default MUJUN_HOST or 127.0.0.1"),
         serve_: bool = typer.Option(True, "--serve/--no-serve", help="start the server at the end")) -> None:
    """The whole job on the sample county: generate, import, match, evaluate 3 years, serve."""
    s = get_settings()
    bundle = s.data_dir / "sample"
    if not (bundle / "summary.md").exists():
        console.rule("1/5 sample county")
        sample(out=bundle, seed=42, parcels=2000, fmt="county")
    console.rule("2/5 import")
    from app.ingest import import_bundle

    ready_url()
    report = import_bundle(db.engine(), bundle)
    _print_import(report)
    console.rule("3/5 match")
    match(rule="equal")
    console.rule("4/5 evaluate")
    import sqlalchemy as sa

    with db.engine().connect() as conn:
        years = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT year FROM metrics ORDER BY year"))]
    for y in years:
        evaluate_(year=y, scheme="zhejiang_default", publish=True, force=False)
    console.rule("5/5 serve")
    from app.auth import create_key

    with db.engine().begin() as conn:
        key = create_key(conn, "demo", "analyst")
    print(f"本演示的分析员 API 密钥（只显示这一次）：{key}")
    if serve_:
        serve(host=host, port=port, workers=1)


# -- province on Dask (issue 16) -------------------------------------------------------------------
@cli.command("run")
def run_province_(province: Path = typer.Option(..., exists=True, file_okay=False,
                                                help="GeoParquet province directory (one row group per county)"),
                  year: int = typer.Option(..., help="evaluation year"),
                  out: Path = typer.Option(..., help="output directory: OUT/<table>/<county>.parquet"),
                  scheduler: str = typer.Option(None, help="Dask scheduler address, e.g. tcp://10.0.0.5:8786"),
                  workers: int = typer.Option(None, help="local workers (default one per core); "
                                                         "ignored with --scheduler"),
                  scheme: str = typer.Option("zhejiang_default", help="preset name or YAML path"),
                  rule: str = typer.Option("equal", help="split rule when no lease or building gives shares"),
                  to_db: bool = typer.Option(False, "--db", help="also write the results into the configured "
                                                                 "database (COPY, one transaction per county)"),
                  publish: bool = typer.Option(False, help="with --db: publish the run for its year"),
                  ) -> None:
    """全省分县并行：按县（Dask 任务）建地、地企对应、分割、合并、分摊、评价；结果写 GeoParquet（--db：再写入数据库）。"""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn)

    from app.province import partitions, run_province
    from scoring import SchemeError

    try:
        n = partitions(province)
    except ValueError as exc:
        fail(str(exc))
    if to_db:
        ready_url()  # a database problem shows before the run, not after it
    with Progress(TextColumn("全省"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=3 * n)

        def progress(e) -> None:  # app.province.CountyProgress: a county finished a stage
            r, pct = e.rows, f"全省 {e.done / e.total:.0%}"
            name = f"县 {e.county}（第 {e.index + 1}/{n} 县）"
            if e.stage == "prepare":
                line = (f"{name} 导入校验、建地完成：宗地 {r['land']:,} 块，企业 {r['enterprises']:,} 家，"
                        f"拒收 {r['rejected']:,} 行，警告 {r['warnings']:,} 条")
            elif e.stage == "match":
                line = (f"{name} 地企对应、分割完成：{r['links']:,} 条对应（邻县宗地 {r['halo_land']:,} 块、"
                        f"企业 {r['halo_enterprises']:,} 家参与）")
            else:
                line = (f"{name} 合并、分摊、评价完成：宗地 {r['land']:,} 块，地企对应 {r['links']:,} 条，"
                        f"企业评价 {r['enterprise_ratings']:,} 条，宗地评价 {r['parcel_ratings']:,} 条 — {pct}")
                bar.console.print(line)
            bar.update(task, completed=e.done, description=line)

        try:
            report = run_province(province, year, out, scheduler=scheduler, workers=workers, scheme=scheme,
                                  rule=rule, progress=progress)
        except (SchemeError, ValueError, FileNotFoundError, OSError) as exc:
            bar.stop()
            fail(str(exc))
    print(f"{report.counties} 个县，{report.workers} 个 worker，{report.seconds} 秒；结果：{report.out}")
    print("  " + ", ".join(f"{k} {v}" for k, v in report.rows.items() if k not in ("rejected", "warnings")))
    rejected, warned = report.rows.get("rejected", 0), report.rows.get("warnings", 0)
    print(f"导入校验：拒收 {rejected:,} 行（有错误的行，未参与计算），警告 {warned:,} 条；"
          f"明细（县、文件、行号、字段、值、原因）见 {report.out / 'rejects'}/（每县一个 Parquet 文件）")
    if to_db:
        import sqlalchemy as sa

        from app.province_db import write_province

        try:
            written = write_province(db.engine(), out, province, year, scheme=scheme, publish=publish,
                                     progress=console.print)
        except (ValueError, OSError, sa.exc.SQLAlchemyError) as exc:
            fail(f"写入数据库失败（已写入的县保留，评价批次标为失败）：{exc}")
        state = "已发布" if publish else "草稿，`mujun publish` 发布"
        print(f"已写入数据库：评价批次 {written.run_id}（{year} 年，{state}），{written.counties} 个县，"
              f"{written.seconds} 秒")


def _progress_bar():
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
    except db.CountyBusy as exc:  # another import into this county did not finish in time
        console.print(f"[bold red]错误：[/]{exc}（本次未导入任何数据）")
        sys.exit(2)  # refused, nothing imported (the import's own exit code for a refusal)


if __name__ == "__main__":
    main()
