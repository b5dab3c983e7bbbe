"""Check boxes and radio buttons stand out in the dark theme: an unchecked box in a table cell or on a form has
an outline of at least 3:1 contrast against what surrounds it (WCAG's bound for the parts of a control),
measured on grabbed pixels. Fusion's own outline, the window colour darkened, vanished on the dark Base."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QRadioButton, QStyle, QStyleOptionButton, QTableWidget, QTableWidgetItem

from app import theme


@pytest.fixture
def dark(qapp):
    theme.apply_theme(qapp, "dark")
    yield
    theme.apply_theme(qapp, "system")


def best_contrast(widget, rect: QRect, background: QColor) -> float:
    image = widget.grab(rect).toImage()
    return max(theme.contrast_ratio(image.pixelColor(x, y), background)
               for x in range(image.width()) for y in range(image.height()))


def test_an_unchecked_box_in_a_dark_table_is_visible(qtbot, dark):
    table = QTableWidget(1, 1)
    item = QTableWidgetItem("run")
    item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
    item.setCheckState(Qt.CheckState.Unchecked)
    table.setItem(0, 0, item)
    qtbot.addWidget(table)
    table.resize(200, 80)
    table.show()
    qtbot.waitExposed(table)
    cell = table.visualItemRect(item)
    # the indicator sits at the cell's left (about 3 to 17 px in), the text starts after it (about 24 px) and the
    # grid lines are on the cell's edges, so inside this strip only the box can reach 3:1
    box = QRect(cell.left() + 1, cell.top() + 1, 20, cell.height() - 3)
    base = table.palette().color(table.viewport().backgroundRole())
    assert best_contrast(table.viewport(), box, base) >= 3.0


@pytest.mark.parametrize("kind", [QCheckBox, QRadioButton])
def test_unchecked_form_controls_are_visible(qtbot, dark, kind):
    control = kind("")
    qtbot.addWidget(control)
    control.show()
    qtbot.waitExposed(control)
    option = QStyleOptionButton()
    control.initStyleOption(option)
    element = (QStyle.SubElement.SE_CheckBoxIndicator if kind is QCheckBox
               else QStyle.SubElement.SE_RadioButtonIndicator)
    indicator = control.style().subElementRect(element, option, control)
    window = control.palette().color(control.backgroundRole())
    assert best_contrast(control, indicator, window) >= 3.0
