"""Ingest: upload files or name a server folder; progress that survives page switches."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

import kb
from kb.embedders import KIND_LABELS, KINDS
from kb.ingest import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, SUPPORTED_TYPES
from ui import bridge, ingesting, jobs, notebook, page, sidebar
from ui.flash import show_flash
from ui.safe import escape_markdown

page.start(
    "Ingest",
    "Add files to a collection: they are read, cleaned, chunked, embedded and written in "
    "atomic batches. Ingesting the same files again adds nothing.",
)

NEW = "\x00new"  # the "new collection" choice; no collection name can hold a NUL byte
POLL_SECONDS = 0.5
SOURCES = ("upload", "folder")
SOURCE_LABELS = {"upload": "Upload files", "folder": "A folder on the server"}


def _uploader_key() -> str:
    return f"i_files_{st.session_state.setdefault('i_upload_round', 0)}"


def _collection_choice(names: list[str]) -> dict[str, object]:
    page.forget_stale("i_collection", [*names, NEW])
    choice = st.selectbox(
        "Collection",
        [*names, NEW],
        format_func=lambda n: "New collection…" if n == NEW else n,
        key="i_collection",
    )
    if choice != NEW:
        info = bridge.collection_info(str(choice))
        if info is not None:
            st.caption(
                escape_markdown(
                    f"{info.documents:,} documents · {info.embedder} · {info.model} · "
                    f"{info.dimension} dims · {info.metric}",
                    single_line=True,
                )
            )
        return {"collection": choice}
    name = st.text_input("New collection name", key="i_new_name", max_chars=200)
    left, right = st.columns(2)
    default_kind = bridge.settings().embedder
    kind = left.selectbox(
        "Embedder",
        KINDS,
        index=KINDS.index(default_kind) if default_kind in KINDS else 0,
        format_func=lambda k: KIND_LABELS.get(k, k),
        key="i_kind",
    )
    model = right.text_input("Model (empty: the embedder's default)", key="i_model")
    left, right = st.columns(2)
    dimension = left.number_input(
        "Dimension (hashing, or an API model kb does not know)",
        min_value=8,
        max_value=16000,
        value=384,
        key="i_dimension",
    )
    metric = right.selectbox("Metric", ("cosine", "l2", "ip"), key="i_metric")
    description = st.text_input("Description (optional)", key="i_description")
    return {
        "collection": name.strip(),
        "embedder": kind,
        "model": model.strip() or None,
        "dimension": int(dimension),
        "metric": metric,
        "description": description,
    }


def _chunking() -> tuple[dict[str, int], str | None]:
    with st.expander("Chunking", icon=":material/content_cut:"):
        left, middle, right = st.columns(3)
        size = left.number_input(
            "Chunk size (characters)",
            min_value=50,
            max_value=100_000,
            value=DEFAULT_CHUNK_SIZE,
            step=100,
            key="i_chunk_size",
        )
        overlap = middle.number_input(
            "Overlap (characters)",
            min_value=0,
            max_value=50_000,
            value=DEFAULT_CHUNK_OVERLAP,
            step=50,
            key="i_chunk_overlap",
        )
        text_field = right.text_input(
            "Text column/field of CSV and JSONL (empty: guess)", key="i_text_field"
        )
    return {"chunk_size": int(size), "chunk_overlap": int(overlap)}, text_field.strip() or None


def _start(
    source: str, target: dict[str, object], chunking: dict[str, int], text_field: str | None
) -> None:
    settings = bridge.settings()
    new = "embedder" in target
    collection = str(target.pop("collection") or "")
    if not collection:
        st.error("Give the new collection a name.")
        return
    if new and collection in bridge.collection_names():
        st.error(
            escape_markdown(
                f"A collection named {collection!r} already exists: pick it in the list "
                "above to add to it (with its own embedder), or choose another name."
            )
        )
        return
    if chunking["chunk_overlap"] >= chunking["chunk_size"]:
        st.error("The overlap must be smaller than the chunk size.")
        return
    options = {**chunking, **{k: v for k, v in target.items() if v is not None}}
    db = bridge.bridge()
    registry = jobs.registry()
    if source == "upload":
        uploads = st.session_state.get(_uploader_key()) or []
        if not uploads:
            st.error("Choose one or more files to upload first.")
            return
        files = [(f.name, f.getvalue()) for f in uploads]
        max_bytes = int(settings.max_upload_mb * 1_000_000)
        job = registry.start(
            f"{len(files)} uploaded file(s) into {collection!r}",
            lambda job: ingesting.run_uploads(
                job,
                db,
                files,
                collection=collection,
                max_bytes=max_bytes,
                text_field=text_field,
                options=options,
            ),
            detail={"collection": collection, "files": [name for name, _ in files]},
        )
        st.session_state.i_upload_round += 1
    else:
        path = ingesting.check_folder(st.session_state.get("i_folder", ""), settings)
        include = [p for p in st.session_state.get("i_include", "").split(",") if p.strip()]
        exclude = [p for p in st.session_state.get("i_exclude", "").split(",") if p.strip()]
        ingesting.check_links(path, settings, include=include, exclude=exclude)
        job = registry.start(
            f"{path} into {collection!r}",
            lambda job: ingesting.run_folder(
                job,
                db,
                path,
                collection=collection,
                include=include,
                exclude=exclude,
                text_field=text_field,
                options=options,
            ),
            detail={"collection": collection, "folder": str(path)},
        )
    sidebar.remember(job.id)
    st.rerun()


def _form(
    names: list[str], busy: bool
) -> tuple[str, dict[str, object], dict[str, int], str | None]:
    st.subheader("New ingest")
    settings = bridge.settings()
    source = st.radio(
        "Files from", SOURCES, format_func=SOURCE_LABELS.get, horizontal=True, key="i_source"
    )
    types = ", ".join(sorted(SUPPORTED_TYPES))
    if source == "upload":
        st.file_uploader(
            f"Files ({types}); up to {settings.max_upload_mb:g} MB each",
            accept_multiple_files=True,
            key=_uploader_key(),
            # The browser's cap (whole MB) never refuses what the limit allows; the
            # exact limit is checked again on the server, per file.
            max_upload_size=max(1, math.ceil(settings.max_upload_mb)),
        )
    else:
        roots = ingesting.allowed_roots(settings)
        if not roots:
            st.info(
                "Ingesting from server folders is off. Set KB_INGEST_ROOTS to the folders the "
                "app may read (separated by ':') and restart the app."
            )
        else:
            st.caption(
                escape_markdown(
                    "Allowed folders: " + ", ".join(str(r) for r in roots), single_line=True
                )
            )
        st.text_input("Folder or file on the server", key="i_folder", disabled=not roots)
        left, right = st.columns(2)
        left.text_input("Include globs (comma-separated, e.g. *.md)", key="i_include")
        right.text_input("Exclude globs (comma-separated)", key="i_exclude")
    target = _collection_choice(names)
    chunking, text_field = _chunking()
    if busy:
        st.caption("An ingest of yours is running; start the next one when it is done.")
    if st.button("Ingest", type="primary", icon=":material/upload:", disabled=busy, key="i_go"):
        try:
            _start(str(source), dict(target), chunking, text_field)
        except kb.DatabaseUnavailable:
            raise
        except kb.KBError as exc:
            st.error(escape_markdown(exc), icon=":material/error:")
    return str(source), target, chunking, text_field


def _report(view: jobs.JobView) -> None:
    outcome = view.result
    if view.error is not None:
        st.error("The ingest failed: " + escape_markdown(view.error), icon=":material/error:")
        return
    assert isinstance(outcome, ingesting.IngestOutcome)
    report = outcome.report
    if outcome.error:
        st.error(
            "The ingest stopped partway; the batches written before are kept, and running it "
            "again finishes the job: " + escape_markdown(outcome.error),
            icon=":material/error:",
        )
    elif report is not None:
        st.success(
            escape_markdown(
                f"Ingested into {outcome.collection!r}: {report.chunks_added:,} chunks added "
                f"in {report.seconds:.1f} s ({report.chunks_per_s:,.1f} chunks/s)."
            ),
            icon=":material/check_circle:",
        )
    for note in outcome.notes:
        st.info(escape_markdown(note))
    skipped = outcome.all_skipped
    cols = st.columns(4)
    cols[0].metric("Files read", f"{report.files_read:,}" if report else "0")
    cols[1].metric("Chunks added", f"{report.chunks_added:,}" if report else "0")
    cols[2].metric("Duplicates skipped", f"{report.duplicates_skipped:,}" if report else "0")
    cols[3].metric("Files skipped", f"{len(skipped):,}")
    if skipped:
        st.text("Files skipped, and why:")
        st.dataframe(
            pd.DataFrame(
                [{"file": s.path, "reason": s.reason} for s in skipped], columns=["file", "reason"]
            ),
            hide_index=True,
            key=f"i_skipped_{view.id}",
        )
    if report is not None and report.warnings:
        st.text("Warnings:")
        st.dataframe(
            pd.DataFrame(
                [{"file": w.path, "warning": w.message} for w in report.warnings],
                columns=["file", "warning"],
            ),
            hide_index=True,
            key=f"i_warnings_{view.id}",
        )
    if report is not None:
        with st.expander("Full report"):
            st.json(report.to_dict(), expanded=False)
        st.page_link(
            "pages/browse.py",
            label="Browse the collection",
            icon=":material/view_list:",
            query_params={"collection": outcome.collection},
        )


@st.fragment(run_every=POLL_SECONDS)
def _watch(job_id: str) -> None:
    job = jobs.registry().get(job_id)
    if job is None:
        return
    view = job.view()
    if not view.running:
        # Finished while we watched: redraw the page with the report (the sidebar's check
        # clears the cached reads on that run).
        st.rerun(scope="app")
    fraction, text = ingesting.progress_text(view.progress)
    st.progress(fraction, text=text)
    st.caption(f"Running for {view.elapsed:.0f} s.")


def _jobs() -> bool:
    views = sidebar.session_jobs()
    if not views:
        return False
    latest = views[0]
    if not latest.running and st.session_state.get("i_pointed") != latest.id:
        # Point the form at the collection just filled (it may have been created by the job).
        st.session_state.i_pointed = latest.id
        if latest.detail.get("collection") in bridge.collection_names():
            st.session_state.i_collection = latest.detail["collection"]
    with st.container(border=True):
        st.markdown("**" + escape_markdown(latest.label, single_line=True) + "**")
        if latest.running:
            _watch(latest.id)
        else:
            _report(latest)
    return latest.running


def _code(
    source: str, target: dict[str, object], chunking: dict[str, int], text_field: str | None
) -> str:
    collection = target.get("collection") or "my collection"
    options = {k: v for k, v in target.items() if k != "collection" and v}
    if source == "upload":
        paths: object = [f.name for f in st.session_state.get(_uploader_key()) or []] or [
            "path/to/files"
        ]
    else:
        paths = [st.session_state.get("i_folder") or "path/to/folder"]
    call = notebook.call(
        "ingest",
        notebook.raw("db"),
        paths,
        collection=collection,
        **options,
        **chunking,
        text_field=text_field,
        progress=notebook.raw("print"),
    )
    return notebook.HEADER + f"report = await {call}\nreport.to_dict()\n"


def render() -> None:
    show_flash()
    if bridge.settings().read_only:
        page.refuse_writes_when_read_only()
        return
    names = bridge.collection_names()
    busy = _jobs()
    source, target, chunking, text_field = _form(names, busy)
    page.notebook(_code(source, target, chunking, text_field))


page.run(render)
