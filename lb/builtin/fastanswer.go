package builtin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// The slot's answer on the fast path (fastpath.go): its head read and
// checked, and its body relayed to the client as it comes.

// maxResponseHead bounds an answer's head, as net/http's Transport does.
const maxResponseHead = 1 << 20

var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// readResponseHead appends the next answer head of br (through its blank
// line) to buf.
func readResponseHead(br *bufio.Reader, buf []byte) ([]byte, error) {
	lineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		buf = append(buf, line...)
		if len(buf) > maxResponseHead {
			return buf, errors.New("slot's answer head too large")
		}
		if err == nil && lineStart && (len(line) == 2 && line[0] == '\r' || len(line) == 1) {
			return buf, nil
		}
		lineStart = err == nil
	}
}

// answer is an answer head of the slot, parsed.
type answer struct {
	head    []byte // status line and header lines, CRLF each, blank line
	status  []byte // "200 OK"
	code    int
	headers []byte
	// length: Content-Length, -1 if none; chunked; noBody (HEAD, 1xx,
	// 204, 304); close: the slot closes the connection after it.
	length         int64
	chunked, close bool
	noBody         bool
	// connNames are the header names the slot's Connection header makes
	// hop-by-hop.
	connNames [][]byte
}

var errBadAnswer = errors.New("malformed answer from the slot")

func (a *answer) parse(head []byte, isHead bool) error {
	*a = answer{head: head, length: -1, connNames: a.connNames[:0]}
	eol := bytes.IndexByte(head, '\n')
	line := bytes.TrimRight(head[:eol], "\r")
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	a.status = line[9:]
	code, err := strconv.Atoi(string(a.status[:3]))
	if err != nil || code < 100 || code > 999 || len(a.status) > 3 && a.status[3] != ' ' {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	a.code = code
	a.close = line[7] == '0'
	a.headers = head[eol+1:]
	for rest := a.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		l := bytes.TrimRight(rest[:i], "\r")
		rest = rest[i+1:]
		if len(l) == 0 {
			break
		}
		name, value, ok := splitHeader(l)
		if !ok {
			return fmt.Errorf("%w: header line %q", errBadAnswer, l)
		}
		switch {
		case eqFold(name, "content-length"):
			n, err := strconv.ParseUint(string(value), 10, 63) // digits only, as net/http reads it
			if err != nil || a.length >= 0 && a.length != int64(n) {
				return fmt.Errorf("%w: Content-Length %q", errBadAnswer, value)
			}
			a.length = int64(n)
		case eqFold(name, "transfer-encoding"):
			if !eqFold(value, "chunked") || a.chunked {
				return fmt.Errorf("%w: Transfer-Encoding %q", errBadAnswer, value)
			}
			a.chunked = true
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, comma) {
				tok = trimOWS(tok)
				switch {
				case eqFold(tok, "close"):
					a.close = true
				case len(tok) > 0 && !eqFold(tok, "keep-alive"):
					a.connNames = append(a.connNames, tok)
				}
			}
		}
	}
	if a.chunked {
		a.length = -1 // Transfer-Encoding wins (RFC 9112, 6.3)
	}
	a.noBody = isHead || code < 200 || code == 204 || code == 304
	if !a.noBody && !a.chunked && a.length < 0 {
		a.close = true // delimited by the slot closing
	}
	return nil
}

// dropAnswerHeader: a header of the slot's answer that is not relayed.
func (a *answer) dropAnswerHeader(name []byte) bool {
	switch {
	case eqFold(name, "connection"), eqFold(name, "keep-alive"), eqFold(name, "proxy-connection"),
		eqFold(name, "te"), eqFold(name, "upgrade"), eqFold(name, "transfer-encoding"),
		eqFold(name, "proxy-authenticate"), eqFold(name, "proxy-authorization"), eqFold(name, "x-bgd-slot"):
		return true
	case a.chunked && eqFold(name, "content-length"):
		return true // the body is chunked: a length beside it would be a second framing
	}
	for _, n := range a.connNames {
		if bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// writeHead writes the answer's head as the client gets it; setCookie is
// a sticky split's Set-Cookie value for a final answer, or "".
func (a *answer) writeHead(w *bufio.Writer, s *side, setCookie string, closing bool) {
	w.WriteString("HTTP/1.1 ")
	w.Write(a.status)
	w.Write(crlf)
	for rest := a.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i+1]
		rest = rest[i+1:]
		l := bytes.TrimRight(line, "\r\n")
		if len(l) == 0 {
			break
		}
		if name, _, _ := bytes.Cut(l, colon); !a.dropAnswerHeader(name) {
			w.Write(l)
			w.Write(crlf)
		}
	}
	if a.code >= 200 {
		w.WriteString("X-Bgd-Slot: ")
		w.WriteString(s.color.String())
		w.Write(crlf)
		if setCookie != "" {
			w.WriteString("Set-Cookie: ")
			w.WriteString(setCookie)
			w.Write(crlf)
		}
	}
	if a.code >= 200 && !a.noBody && a.length < 0 {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if closing && a.code >= 200 {
		w.WriteString("Connection: close\r\n")
	}
	w.Write(crlf)
}

// relayBody copies the answer's body from kc to c as it comes.
func (a *answer) relayBody(c *frontConn, kc *keptConn) error {
	switch {
	case a.noBody:
		return nil
	case a.chunked:
		return relayChunked(c, kc.br)
	case a.length >= 0:
		return relayN(c, kc.br, a.length)
	default:
		return relayUntilClose(c, kc.br)
	}
}

// errClientGone: a write to the client failed.
var errClientGone = errors.New("client went away")

// fill waits for the slot's next bytes, flushing what the client has not
// got yet first when none are buffered (a streamed answer reaches the
// client as the slot sends it).
func fill(c *frontConn, br *bufio.Reader) error {
	if br.Buffered() > 0 {
		return nil
	}
	if c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			c.watch.gone.Store(true)
			return errClientGone
		}
	}
	_, err := br.Peek(1)
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// toClient writes b to the client; a write that fails means it left.
func (c *frontConn) toClient(b []byte) error {
	if _, err := c.bw.Write(b); err != nil {
		c.watch.gone.Store(true)
		return errClientGone
	}
	return nil
}

// nextLine reads the slot's next line (what names it in an error).
func nextLine(c *frontConn, br *bufio.Reader, what string) ([]byte, error) {
	if err := fill(c, br); err != nil {
		return nil, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errBadAnswer, what, err)
	}
	return line, nil
}

// relayN copies n bytes of br to the client.
func relayN(c *frontConn, br *bufio.Reader, n int64) error {
	for n > 0 {
		if err := fill(c, br); err != nil {
			return err
		}
		b, _ := br.Peek(int(min(int64(br.Buffered()), n)))
		if err := c.toClient(b); err != nil {
			return err
		}
		br.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

// relayChunked copies a chunked body, its trailers included, to the client.
func relayChunked(c *frontConn, br *bufio.Reader) error {
	for {
		line, err := nextLine(c, br, "chunk size line")
		if err != nil {
			return err
		}
		size, err := chunkSize(line)
		if err != nil {
			return err
		}
		if err := c.toClient(line); err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if err := relayN(c, br, size); err != nil {
			return err
		}
		end, err := nextLine(c, br, "chunk end")
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(end, "\r\n")) != 0 {
			return fmt.Errorf("%w: a chunk longer than its size", errBadAnswer)
		}
		if err := c.toClient(end); err != nil {
			return err
		}
	}
	// The trailer section, through its blank line.
	for {
		line, err := nextLine(c, br, "trailer")
		if err != nil {
			return err
		}
		if err := c.toClient(line); err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// chunkSize reads a chunk-size line ("1a;ext\r\n").
func chunkSize(line []byte) (int64, error) {
	l := bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(l, ';'); i >= 0 {
		l = l[:i]
	}
	l = bytes.TrimRight(l, " \t")
	if len(l) == 0 || len(l) > 15 {
		return 0, fmt.Errorf("%w: chunk size %q", errBadAnswer, line)
	}
	var n int64
	for _, b := range l {
		if !isHex(b) {
			return 0, fmt.Errorf("%w: chunk size %q", errBadAnswer, line)
		}
		n = n<<4 | int64(hexVal(b))
	}
	return n, nil
}

func hexVal(b byte) byte {
	switch {
	case b >= 'a':
		return b - 'a' + 10
	case b >= 'A':
		return b - 'A' + 10
	}
	return b - '0'
}

// relayUntilClose sends a body that ends when the slot closes the
// connection to the client in chunks.
func relayUntilClose(c *frontConn, br *bufio.Reader) error {
	for {
		err := fill(c, br)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			if _, err := c.bw.WriteString("0\r\n\r\n"); err != nil {
				return errClientGone
			}
			return nil
		}
		if err != nil {
			return err
		}
		b, _ := br.Peek(br.Buffered())
		fmt.Fprintf(c.bw, "%x\r\n", len(b))
		c.bw.Write(b)
		if err := c.toClient(crlf); err != nil {
			return err
		}
		br.Discard(len(b))
	}
}
