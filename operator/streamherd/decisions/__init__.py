"""Pure decisions: functions of observed state and spec, no I/O, exhaustively unit-tested."""
