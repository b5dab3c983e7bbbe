"""Colours and looks: follow the system's light or dark palette, and make plots match it.

The app uses the platform's own palette ("system"); a person can force light or dark from the View
menu (also LLM_PLAYGROUND_THEME=light|dark), for desktops whose theme Qt cannot read. Plots take
their background and text colours from the palette and restyle themselves when it changes.
"""
from __future__ import annotations

import os

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QWidget

from app.resources import RESOURCES

THEMES = ("system", "light", "dark")

# Okabe-Ito colours (readable by colour-blind people), then a few more for many runs.
RUN_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
              "#8C564B", "#17BECF"]
# Fixed roles inside one run's plot.
SERIES_COLORS = {"train": "#0072B2", "val": "#D55E00", "lr": "#009E73", "tokens": "#CC79A7"}
DARK_SERIES_COLORS = {"train": "#56B4E9", "val": "#FF8C42", "lr": "#3DD9A4", "tokens": "#E59AD0"}

_system_palette: QPalette | None = None


def is_dark(palette: QPalette | None = None) -> bool:
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def series_color(role: str) -> str:
    return (DARK_SERIES_COLORS if is_dark() else SERIES_COLORS)[role]


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def plot_background() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Base)


def plot_foreground() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Text)


def muted_text_color() -> QColor:
    color = QColor(plot_foreground())
    color.setAlphaF(0.65)
    return color


def style_plot_widget(widget: pg.PlotWidget | pg.GraphicsLayoutWidget) -> None:
    """Background, axis and title colours from the current palette."""
    widget.setBackground(plot_background())
    fg = plot_foreground()
    items = widget.ci.items if isinstance(widget, pg.GraphicsLayoutWidget) else {widget.getPlotItem(): None}
    for item in list(items):
        if isinstance(item, pg.PlotItem):
            style_plot_item(item, fg)


def style_plot_item(item: pg.PlotItem, fg: QColor | None = None) -> None:
    fg = fg or plot_foreground()
    grid = QColor(fg)
    for name in ("left", "bottom", "right", "top"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(grid))
        axis.setTextPen(pg.mkPen(fg))
    if item.titleLabel is not None and item.titleLabel.text:
        item.setTitle(item.titleLabel.text, color=fg.name())
    if item.legend is not None:
        item.legend.setLabelTextColor(fg)


def dark_palette() -> QPalette:
    """A dark palette for Fusion (used when dark is forced on a platform that cannot say so)."""
    p = QPalette()
    window, base, text = QColor(37, 37, 40), QColor(28, 28, 30), QColor(230, 230, 230)
    disabled = QColor(128, 128, 128)
    p.setColor(QPalette.ColorRole.Window, window)
    p.setColor(QPalette.ColorRole.WindowText, text)
    p.setColor(QPalette.ColorRole.Base, base)
    p.setColor(QPalette.ColorRole.AlternateBase, QColor(45, 45, 48))
    p.setColor(QPalette.ColorRole.ToolTipBase, QColor(50, 50, 54))
    p.setColor(QPalette.ColorRole.ToolTipText, text)
    p.setColor(QPalette.ColorRole.PlaceholderText, disabled)
    p.setColor(QPalette.ColorRole.Text, text)
    p.setColor(QPalette.ColorRole.Button, QColor(50, 50, 54))
    p.setColor(QPalette.ColorRole.ButtonText, text)
    p.setColor(QPalette.ColorRole.BrightText, QColor(255, 80, 80))
    p.setColor(QPalette.ColorRole.Light, QColor(70, 70, 74))
    p.setColor(QPalette.ColorRole.Midlight, QColor(60, 60, 64))
    p.setColor(QPalette.ColorRole.Mid, QColor(45, 45, 48))
    p.setColor(QPalette.ColorRole.Dark, QColor(20, 20, 22))
    p.setColor(QPalette.ColorRole.Shadow, QColor(0, 0, 0))
    p.setColor(QPalette.ColorRole.Highlight, QColor(42, 130, 218))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.Link, QColor(86, 180, 233))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def light_palette() -> QPalette:
    """Fusion's standard light palette."""
    return QApplication.style().standardPalette() if QApplication.style() else QPalette()


def apply_theme(app: QApplication, theme: str) -> None:
    """Switch to "system", "light" or "dark"; widgets and plots restyle on the palette change."""
    global _system_palette
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
    if theme not in THEMES:
        theme = "system"
    if theme == "system":
        if hasattr(app.styleHints(), "unsetColorScheme"):
            app.styleHints().unsetColorScheme()
        app.setPalette(_system_palette)
        return
    wanted = Qt.ColorScheme.Dark if theme == "dark" else Qt.ColorScheme.Light
    if hasattr(app.styleHints(), "setColorScheme"):
        app.styleHints().setColorScheme(wanted)  # where the platform honours it, this is enough
    if is_dark(app.palette()) != (theme == "dark"):
        app.setStyle("Fusion")  # a hand-made palette needs a style that follows palettes
        app.setPalette(dark_palette() if theme == "dark" else light_palette())


def setup_application(app: QApplication) -> None:
    """Once per process, before any window: crisp plots, the style sheet, the icon."""
    pg.setConfigOptions(antialias=True, foreground=plot_foreground(), background=plot_background())
    qss = RESOURCES / "styles" / "app.qss"
    if qss.exists():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    icon = RESOURCES / "icons" / "app.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    theme = os.environ.get("LLM_PLAYGROUND_THEME")
    if theme:
        apply_theme(app, theme)


def palette_colours(widget: QWidget) -> tuple[QColor, QColor]:
    """(background, text) of the widget's palette: plots follow the light or dark theme."""
    palette = widget.palette()
    return palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)


def mono_font() -> QFont:
    """The system's fixed-width font (commands, ids, sample text)."""
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
