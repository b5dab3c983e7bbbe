"""Tokenizer tab: how one text becomes tokens under several tokenizers, and a BPE trained here.

Left: a text box and, for each encoding (char, the current model's tokenizer, the BPEs trained
here, GPT-2 / cl100k_base / o200k_base where tiktoken can load them), the text cut into coloured
token spans with the ids and counts. Right: train a byte-level BPE on a corpus (in a job, with
progress and Cancel), browse its merges, hand it to the Training tab for the next model, and a
chart of bytes per token of every encoding on the current corpus.

Named encodings are loaded in a job (jobs.py), so a slow or missing network never blocks the window;
an encoding that cannot load is listed with the reason. Training a BPE is its own panel (bpe_panel.py),
and so is the merges page with the hand-over to the Training tab (merges_panel.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.state import AppState
from app.tabs.tokenizer.bpe_panel import BpePanel
from app.tabs.tokenizer.chart import BytesPerTokenChart
from app.tabs.tokenizer.jobs import (
    BytesPerToken,
    CharVocabulary,
    NamedEncodingsLoaded,
    Tokenized,
    bytes_per_token_job,
    char_vocabulary_job,
    named_encodings_job,
    sample_text,
    tokenize_job,
)
from app.tabs.tokenizer.merges_panel import MergesPanel
from app.tabs.tokenizer.spans import EncodingPanel
from app.worker import Job, JobRunner
from engine import CharTokenizer, Corpus, Tokenizer

NAMED_SHOWN = ("gpt2", "cl100k_base", "o200k_base")
DEFAULT_TEXT = (
    "Tokenizers cut text into pieces.  Common words stay whole; rare ones split:\n"
    "internationalization, naïve café, 12345 + 678 = 13023\n"
    "    def tokenize(text):  # code, with its indentation\n"
    "        return text.split()\n"
    "日本語のテキスト, emoji 🙂👍🏽 and <|endoftext|> as plain text."
)
REFRESH_MS = 250
MAX_TEXT_CHARS = 100_000  # characters of the text box that are tokenized and shown


@dataclass
class Encoding:
    """A row of the tab: a tokenizer, or a name and why it is unavailable."""

    key: str
    name: str
    tokenizer: Tokenizer | None
    reason: str = ""
    detail: str = ""


# ---------------------------------------------------------------- the tab

class TokenizerTab(QWidget):
    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.trained: list[Tokenizer] = []  # BPEs trained in this tab, oldest first
        self._named: list[Encoding] = [Encoding(n, n, None, "loading…") for n in NAMED_SHOWN]
        self._named_job = None
        self._named_requested = False
        self._chart_job = None
        self._chart_again = False
        self._chart_stale = True
        self._corpus_char: tuple[Corpus, CharTokenizer] | None = None  # a corpus and its char tokenizer
        self._char_job: Job | None = None
        self.panels: dict[str, EncodingPanel] = {}
        self._encoded_by: dict[str, Tokenizer] = {}  # the tokenizer each panel's spans came from
        self._tokenize_job: Job | None = None
        self._encoding_with: dict[str, Tokenizer] = {}
        self._text_cut = (0, 0)

        self._build_ui()
        self._refresh_timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._chart_timer = QTimer(self, singleShot=True, interval=2 * REFRESH_MS)
        self._chart_timer.timeout.connect(self.update_chart)
        self.text.textChanged.connect(self._refresh_timer.start)
        self.show_ws.toggled.connect(self.refresh)

        # Only the tokenizer matters here: a model trained in place (model_changed alone) tokenizes the same.
        state.tokenizer_changed.connect(self._on_tokenizer_changed)
        state.corpus_changed.connect(self._on_corpus_changed)
        self.refresh()

    # ------------------------------------------------------------ layout

    def _build_ui(self) -> None:
        self.text = QPlainTextEdit(DEFAULT_TEXT)
        self.text.setMaximumHeight(110)
        self.text.setToolTip("Type or paste any text: every encoding below updates as you type")
        self.show_ws = QCheckBox("Show whitespace")
        self.show_ws.setToolTip("Draw spaces as ·, tabs as → and newlines as ↵, so you can see which token holds them")
        self.sample_button = QPushButton("Corpus sample")
        self.sample_button.setToolTip("Put a passage of the current corpus in the box")
        self.sample_button.clicked.connect(self._use_corpus_sample)
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.PlainText)  # tokenizer names may come from files
        self.summary.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        options = QHBoxLayout()
        options.addWidget(self.show_ws)
        options.addWidget(self.sample_button)
        options.addStretch(1)
        options.addWidget(self.summary)

        self.rows = QWidget()
        self.rows_layout = QVBoxLayout(self.rows)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(6)
        self.rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.rows)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.text)
        lv.addLayout(options)
        lv.addWidget(scroll, 1)

        self.bpe = BpePanel(self.state, self.runner)
        self.bpe.trained.connect(self._on_bpe_trained)
        self.bpe.message.connect(self._notify)

        self.merges_panel = MergesPanel(self.state, self.runner)
        self.merges_panel.message.connect(self._notify)

        # Chart
        self.chart = BytesPerTokenChart()
        self.chart.setToolTip("Average bytes per token on a sample of the current corpus: more bytes per token "
                              "means shorter sequences, so more text fits in the context")
        chart_box = QWidget()
        cv = QVBoxLayout(chart_box)
        cv.addWidget(self.chart)

        # Merges and the chart share the space below the trainer as two pages: each gets the full height,
        # which at 1280x720 three stacked boxes could not have.
        self.right_pages = QTabWidget()
        self.right_pages.setDocumentMode(True)
        self.right_pages.addTab(self.merges_panel, "Merges")
        self.right_pages.addTab(chart_box, "Bytes per token")
        self.right_pages.setTabToolTip(1, "Average bytes per token of every encoding on the current corpus")
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.bpe)
        rv.addWidget(self.right_pages, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setSizes([900, 400])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    # ------------------------------------------------------------ encodings

    def encodings(self) -> list[Encoding]:
        """Every encoding row, in display order."""
        char = self._char_encoding()
        model_tok = self.state.tokenizer
        same_chars = (isinstance(model_tok, CharTokenizer) and char.tokenizer is not None
                      and model_tok.chars == char.tokenizer.chars)
        rows = [] if same_chars else [char]  # the model's own char tokenizer says the same
        if model_tok is not None:
            rows.append(Encoding("model", f"model: {model_tok.name}", model_tok,
                                 detail=f"{model_tok.vocab_size:,} tokens"))
        for i, tok in enumerate(self.trained):
            rows.append(Encoding(f"trained:{i}", tok.name, tok, detail=f"trained here · {tok.vocab_size:,} tokens"))
        for enc in self._named:
            detail = f"{enc.tokenizer.vocab_size:,} tokens" if enc.tokenizer is not None else ""
            rows.append(Encoding(f"named:{enc.key}", enc.name, enc.tokenizer, enc.reason, detail))
        return rows

    def _char_encoding(self) -> Encoding:
        corpus = self.state.corpus
        if corpus is None:
            tok = CharTokenizer.from_text(self.text.toPlainText())
            return Encoding("char", "char", tok, detail="characters of this text")
        if self._corpus_char is None or self._corpus_char[0] is not corpus:
            self._start_char_vocabulary(corpus)
            return Encoding("char", "char", None, f"reading the characters of {corpus.name}…")
        tok = self._corpus_char[1]
        return Encoding("char", "char", tok, detail=f"characters of {corpus.name} · {tok.vocab_size:,} tokens")

    def _start_char_vocabulary(self, corpus: Corpus) -> None:
        if self._char_job is not None:
            return
        self._char_job = self.runner.start("tokenizer-chars", char_vocabulary_job(corpus))
        self._char_job.events.connect(self._on_char_events)
        self._char_job.finished.connect(self._on_char_finished)

    @Slot(list)
    def _on_char_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, CharVocabulary) and event.corpus is self.state.corpus:
                self._corpus_char = (event.corpus, event.tokenizer)

    @Slot()
    def _on_char_finished(self) -> None:
        self._char_job = None
        self.refresh()  # with the vocabulary, or asking for the new corpus's

    @property
    def busy(self) -> bool:
        """About to tokenize (typing pauses first), tokenizing, or still putting spans on screen."""
        return (self._refresh_timer.isActive() or self._tokenize_job is not None
                or any(p.spans.filling for p in self.panels.values()))

    @Slot()
    def refresh(self) -> None:
        """Bring every row up to date with the text: rows whose encoding is stale are tokenized in a job
        (started over if the text changes meanwhile) and shown as they arrive; the rest are redrawn."""
        self._refresh_timer.stop()
        full = self.text.toPlainText()
        text = full[:MAX_TEXT_CHARS]
        rows = self.encodings()
        keys = [r.key for r in rows]
        if list(self.panels) != keys:
            self._arrange_panels(keys)
        to_encode = []
        for row in rows:
            panel = self.panels[row.key]
            if row.tokenizer is None:
                panel.set_unavailable(row.name, row.reason or "unavailable")
                continue
            panel.set_title(row.name, row.detail)
            data = panel.data
            # Only the text or the tokenizer changing needs a new encoding (not the whitespace toggle).
            if data is None or data.text != text or self._encoded_by.get(row.key) is not row.tokenizer:
                to_encode.append((row.key, row.name, row.tokenizer))
                panel.set_pending()
            elif panel.shown_whitespace != self.show_ws.isChecked():
                panel.set_tokenized(data, self.show_ws.isChecked())
        self._text_cut = (len(text), len(full))
        if self._tokenize_job is not None:
            self._tokenize_job.stop()  # its results are for an older text: ignored
            self._tokenize_job = None
        if to_encode:
            self._tokenize_job = job = self.runner.start("tokenizer-encode", tokenize_job(text, to_encode))
            self._encoding_with = {key: tok for key, _, tok in to_encode}
            job.events.connect(self._on_tokenized)
            job.finished.connect(self._on_tokenize_finished)
        self._update_summary()

    def _arrange_panels(self, keys: list[str]) -> None:
        """One panel per row key, in order: panels of keys still shown are kept with their spans (building a
        panel costs the GUI thread ~10 ms, and a new model adds or removes only a row or two)."""
        for key in [k for k in self.panels if k not in keys]:
            panel = self.panels.pop(key)
            self._encoded_by.pop(key, None)
            panel.setParent(None)
            panel.deleteLater()
        for key in keys:
            panel = self.panels.pop(key, None) or EncodingPanel()
            self.rows_layout.removeWidget(panel)
            self.rows_layout.insertWidget(self.rows_layout.count() - 1, panel)  # before the closing stretch
            self.panels[key] = panel

    @Slot(list)
    def _on_tokenized(self, events: list) -> None:
        if self.sender() is not self._tokenize_job:
            return
        for event in events:
            if not isinstance(event, Tokenized) or event.key not in self.panels:
                continue
            panel = self.panels[event.key]
            if event.data is None:
                panel.set_unavailable(panel.name, event.error)
                continue
            self._encoded_by[event.key] = self._encoding_with.get(event.key)
            panel.set_tokenized(event.data, self.show_ws.isChecked())
        self._update_summary()

    @Slot()
    def _on_tokenize_finished(self) -> None:
        if self.sender() is self._tokenize_job:
            self._tokenize_job = None

    def _update_summary(self) -> None:
        shown, total = self._text_cut
        cut = f" (the first {shown:,} of {total:,})" if total > shown else ""
        counts = [f"{p.name}: {p.data.num_tokens:,}" for p in self.panels.values()
                  if p.data is not None and not p.pending]
        pending = any(p.pending for p in self.panels.values())
        self.summary.setText(f"{shown:,} characters{cut} · tokens — " + ", ".join(counts)
                             + (" · tokenizing…" if pending else ""))

    def panel(self, name: str) -> EncodingPanel | None:
        """The row of an encoding by its shown name (or key)."""
        if name in self.panels:
            return self.panels[name]
        for row in self.encodings():
            if row.name == name:
                return self.panels.get(row.key)
        return None

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._named_requested:
            self._named_requested = True
            QTimer.singleShot(0, self.load_named_encodings)
            self._chart_stale = True
        if self._chart_stale:
            self._chart_timer.start()

    @property
    def named_loaded(self) -> bool:
        """The named encodings' job has answered (each loaded, or listed with the reason it cannot)."""
        return self._named_job is None and all(e.reason != "loading…" for e in self._named)

    @Slot()
    def load_named_encodings(self) -> None:
        """Ask tiktoken for the named encodings in a job (it may need the network or its cache)."""
        if self._named_job is not None:
            return
        self._named = [Encoding(n, n, None, "loading…") for n in NAMED_SHOWN]
        self.refresh()
        self._named_job = self.runner.start("tokenizer-named", named_encodings_job())
        self._named_job.events.connect(self._on_named_events)
        self._named_job.failed.connect(self._on_named_failed)
        self._named_job.finished.connect(self._on_named_finished)

    @Slot(list)
    def _on_named_events(self, events: list) -> None:
        for event in events:
            if not isinstance(event, NamedEncodingsLoaded):
                continue
            found = {name: (tok, reason) for name, tok, reason in event.status}
            self._named = []
            for name in NAMED_SHOWN:
                tok, reason = found[name]
                self._named.append(Encoding(name, name, tok, reason or ("" if tok else "unavailable")))
            self.refresh()
            self._fill_merges_combo()
            self._chart_timer.start()

    @Slot(str)
    def _on_named_failed(self, message: str) -> None:
        self._named = [Encoding(n, n, None, message) for n in NAMED_SHOWN]
        self.refresh()

    @Slot()
    def _on_named_finished(self) -> None:
        self._named_job = None
        if any(e.reason == "loading…" for e in self._named):  # ended without an answer
            self._named = [Encoding(n, n, None, "could not be loaded") for n in NAMED_SHOWN]
            self.refresh()

    # ------------------------------------------------------------ BPEs trained here

    @Slot(object)
    def _on_bpe_trained(self, tok: Tokenizer) -> None:
        self.trained.append(tok)
        self.refresh()
        self._fill_merges_combo(select=tok)
        self._chart_timer.start()

    # ------------------------------------------------------------ merges and hand-over

    def _merge_candidates(self) -> list[tuple[str, Tokenizer]]:
        out = [(f"{tok.name} (trained here)", tok) for tok in reversed(self.trained)]
        if self.state.tokenizer is not None and not isinstance(self.state.tokenizer, CharTokenizer):
            out.append((f"model: {self.state.tokenizer.name}", self.state.tokenizer))
        for enc in self._named:
            if enc.tokenizer is not None:
                out.append((enc.name, enc.tokenizer))
        return out

    def _fill_merges_combo(self, select: Tokenizer | None = None) -> None:
        unavailable = [(enc.name, enc.reason) for enc in self._named if enc.tokenizer is None]
        self.merges_panel.set_choices(self._merge_candidates(), unavailable, self.trained, select)

    # ------------------------------------------------------------ bytes per token chart

    @property
    def chart_measuring(self) -> bool:
        return self._chart_job is not None

    @Slot()
    def update_chart(self) -> None:
        """Measure bytes per token of every available encoding on a sample of the corpus (in a job)."""
        if not self.isVisible():
            self._chart_stale = True  # measured when the tab is shown
            return
        self._chart_stale = False
        if self._chart_job is not None:
            self._chart_again = True
            return
        corpus = self.state.corpus
        if corpus is not None:
            text, source = sample_text(corpus.text()), f"on a sample of {corpus.name}"
        else:
            text, source = self.text.toPlainText(), "on the text above (no corpus chosen)"
        encodings = [(r.name, r.tokenizer) for r in self.encodings() if r.tokenizer is not None]
        if not text or not encodings:
            self.chart.set_values([])
            return
        self._chart_job = self.runner.start("tokenizer-chart", bytes_per_token_job(text, encodings, source))
        self._chart_job.events.connect(self._on_chart_events)
        # Bound slots, never a lambda holding self: a job can end after the tab is gone (see app/worker.py).
        self._chart_job.failed.connect(self._on_chart_failed)
        self._chart_job.finished.connect(self._on_chart_finished)

    @Slot(list)
    def _on_chart_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, BytesPerToken):
                self.chart.set_values(list(event.values), event.source)

    @Slot(str)
    def _on_chart_failed(self, message: str) -> None:
        self._notify(f"Bytes-per-token chart failed: {message}")

    @Slot()
    def _on_chart_finished(self) -> None:
        self._chart_job = None
        if self._chart_again:
            self._chart_again = False
            self.update_chart()

    # ------------------------------------------------------------ reacting to the app

    @Slot()
    def _on_tokenizer_changed(self) -> None:
        self.refresh()
        self._fill_merges_combo()
        self._chart_timer.start()

    @Slot()
    def _on_corpus_changed(self) -> None:
        self._corpus_char = None
        self.bpe.fill_corpus_combo()
        self.refresh()
        self._chart_timer.start()

    @Slot()
    def _use_corpus_sample(self) -> None:
        corpus = self.state.corpus
        if corpus is None:
            self._notify("No corpus chosen yet: pick one in the Training tab.")
            return
        self.text.setPlainText(corpus.sample_passage(600))

    def _notify(self, message: str) -> None:
        if not dialogs.notify(self, message, 8000):
            self.summary.setText(message)
