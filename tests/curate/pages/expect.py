"""What each fixture page must keep (regular expressions) and drop (boilerplate)."""

KEEP = {
    "code_tutorial.html": [
        r"def binary_search\(items, target\):\n    lo, hi = 0, len\(items\) - 1",
        r"\n    while lo <= hi:\n        mid = \(lo \+ hi\) // 2",
        r"\n            lo = mid \+ 1\n        else:",
        r">>> binary_search\(\[1, 3, 5, 7\], 5\)\n2",
        r"between `?lo`? and\s+`?hi`?",
    ],
    "mathml_lesson.html": [
        r"\$ax\^2\+bx\+c=0\$",
        r"a \\neq 0",
        r"\$\$\s*x = \\frac\{-b \\pm \\sqrt\{b\^2-4ac\}\}\{2a\}\s*\$\$",
        r"\$b\^2\s*[−-]\s*4ac\$",
        r"roots one and two",
    ],
    "tex_notes.html": [
        r"\\\(\|r\| < 1\\\)|\$\|r\| < 1\$",
        r"\$\$\\sum_\{k=0\}\^\{\\infty\} r\^k = \\frac\{1\}\{1-r\}\.\$\$",
        r"S_n \(1 - r\) = 1 - r\^\{n\+1\}",
        r"\\int_0\^1 x\^2 \\, dx = \\frac\{1\}\{3\}",
        r"1\.75",
    ],
}
DROP = {
    "code_tutorial.html": [r"All rights reserved", r"Popular posts"],
    "mathml_lesson.html": [r"Log in", r"Terms - Contact"],
    "tex_notes.html": [r"Comments are closed", r"Search"],
}
