"""The SQLite driver's bulk row source keeps bytes exactly, whatever they hold."""

from __future__ import annotations

from pathlib import Path

from service.store.sqlite import SqliteDriver


async def test_bytes_come_back_byte_for_byte(tmp_path: Path) -> None:
    driver = await SqliteDriver.open(tmp_path / "rows.db")
    bodies = [
        b'{"a":"\xc3\xa9 \\u0000 \\"q\\""}',  # UTF-8 with escapes: the common, text path
        "ünï 😀".encode(),
        b"",
        None,
        b"\xff\xfe not UTF-8",  # the hex path
    ]
    try:
        sql, args = driver.row_source(
            (("id", "text"), ("body", "bytea")), [(str(i), b) for i, b in enumerate(bodies)], 1
        )
        async with driver.connection() as conn:
            rows = await conn.fetch(sql, *args)
    finally:
        await driver.close()
    assert [row["body"] for row in rows] == bodies
