package deploy

import "strings"

// UpdateBlock returns text with its fcgishim block (BlockBegin … BlockEnd
// lines) replaced by block, or block appended when there is none. Every
// other line is kept as it is. block must include its marker lines.
func UpdateBlock(text, block string) string {
	if !strings.HasSuffix(block, "\n") {
		block += "\n"
	}
	lines := strings.SplitAfter(text, "\n")
	begin, end := -1, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if begin < 0 && t == BlockBegin {
			begin = i
		} else if begin >= 0 && t == BlockEnd {
			end = i
			break
		}
	}
	if begin >= 0 && end >= 0 {
		return strings.Join(lines[:begin], "") + block + strings.Join(lines[end+1:], "")
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	if text != "" && !strings.HasSuffix(text, "\n\n") {
		text += "\n"
	}
	return text + block
}
