package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"
)

// sampleVars has the fields of slots.Vars (config does not import slots):
// command, workdir and env templates are executed against it at load, so
// that a typo such as {{.Prot}} is refused then rather than at a deploy.
type sampleVars struct {
	Port    int
	Color   string
	Release string
}

// sampleRelease stands for a release name while checking templates.
const sampleRelease = "v1"

// MaxExpanded caps what one template may expand to: Linux refuses an
// argument or environment string longer than 128 KiB (MAX_ARG_STRLEN).
const MaxExpanded = 128 << 10

// templateBudget bounds the time all template checks of one Validate may
// take: text/template can loop ({{range 100000000}}), and a config must
// not hang bgd.
var templateBudget = 2 * time.Second

// checker caches PATH look-ups and holds the template time budget, so
// Validate stays linear however many services repeat the same command.
type checker struct {
	found    map[string]string
	deadline time.Time
	timedOut bool
}

func newChecker() *checker {
	return &checker{found: map[string]string{}, deadline: time.Now().Add(templateBudget)}
}

func hasTemplate(s string) bool { return strings.Contains(s, "{{") }

// validateSlot checks command, workdir and env: not empty, no NUL byte,
// templates that parse and execute with sample values, and a command that
// exists.
func (s *Service) validateSlot(name string, add adder, ck *checker) {
	argsOK := s.validateArgs(name, add, ck)
	workdirOK := s.validateWorkdir(name, add, ck)
	// A command[0] with a template (e.g. releases/{{.Release}}/bin/app) is
	// only known at deploy time, and so is a relative one under a workdir
	// template: both are checked when the slot starts, not here.
	if argsOK && !hasTemplate(s.Command[0]) &&
		(workdirOK || filepath.IsAbs(s.Command[0]) || !strings.Contains(s.Command[0], "/")) {
		if msg := ck.command(s.Command[0], s.Workdir); msg != "" {
			add("service %q: %s", name, msg)
		}
	}
	s.validateEnv(name, add, ck)
}

// validateArgs checks the command's elements; it reports whether command[0]
// is there and can be looked up.
func (s *Service) validateArgs(name string, add adder, ck *checker) bool {
	ok := true
	if len(s.Command) == 0 || strings.TrimSpace(s.Command[0]) == "" {
		add("service %q: command is empty: give the slot's argv, e.g. [\"./bin/server\", \"--port\", \"{{.Port}}\"]", name)
		ok = false
	}
	for i, arg := range s.Command {
		if hasNUL(arg) {
			add("service %q: command[%d] %q contains a NUL byte, which no argv can hold", name, i, arg)
			ok = false
			continue
		}
		if msg := ck.template(s, arg); msg != "" {
			add("service %q: command[%d] %q %s", name, i, arg, msg)
		}
	}
	return ok
}

// validateWorkdir checks the workdir; it reports whether it is a known,
// existing directory that a relative command can be looked up in.
func (s *Service) validateWorkdir(name string, add adder, ck *checker) bool {
	switch {
	case hasNUL(s.Workdir):
		add("service %q: workdir %q contains a NUL byte", name, s.Workdir)
		return false
	case hasTemplate(s.Workdir):
		if msg := ck.template(s, s.Workdir); msg != "" {
			add("service %q: workdir %q %s", name, s.Workdir, msg)
		}
		// Its value depends on the colour and the release (e.g.
		// releases/{{.Release}}, unpacked at deploy time): it can only be
		// checked when a slot starts.
		return false
	case s.Workdir != "":
		if fi, err := os.Stat(s.Workdir); err != nil || !fi.IsDir() {
			add("service %q: workdir %q is not a directory (%s): create it or fix the path", name, s.Workdir, statProblem(err))
			return false
		}
	}
	return true
}

func (s *Service) validateEnv(name string, add adder, ck *checker) {
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := s.Env[k]
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			add("service %q: env key %q: a variable name must be non-empty, without '=' or NUL", name, k)
		case reservedEnv[k]:
			add("service %q: env.%s: bgd sets PORT, BG_COLOR and BG_RELEASE for every slot (and finds slots by them): remove it", name, k)
		case hasNUL(v):
			add("service %q: env.%s %q contains a NUL byte, which no environment can hold", name, k, v)
		default:
			if msg := ck.template(s, v); msg != "" {
				add("service %q: env.%s %q %s", name, k, v, msg)
			}
		}
	}
}

var (
	noField  = regexp.MustCompile(`can't evaluate field (\w+) in type (\S+)`)
	tmplHead = regexp.MustCompile(`^template: \w+:\d+:\d+: `)
)

// template returns why text, if it is a template, does not expand for
// either colour: "" when it does.
func (ck *checker) template(s *Service, text string) string {
	if !hasTemplate(text) {
		return ""
	}
	t, err := template.New("t").Funcs(checkFuncs).Option("missingkey=error").Parse(text)
	if err != nil {
		return fmt.Sprintf("is not a valid template: %s", tmplHead.ReplaceAllString(err.Error(), ""))
	}
	for _, col := range Colors {
		if ck.timedOut {
			return ""
		}
		err := ck.execute(t, sampleVars{Port: s.Port(col), Color: col.String(), Release: sampleRelease})
		if err == nil {
			continue
		}
		if errors.Is(err, errTooSlow) || errors.Is(err, errTooLong) {
			ck.timedOut = ck.timedOut || errors.Is(err, errTooSlow)
			if errors.Is(err, errTooSlow) {
				return errTooSlow.Error()
			}
			return errTooLong.Error()
		}
		if m := noField.FindStringSubmatch(err.Error()); m != nil {
			if m[2] == "config.sampleVars" {
				return fmt.Sprintf("names field .%s, which does not exist: use {{.Port}}, {{.Color}} or {{.Release}}", m[1])
			}
			return fmt.Sprintf("names field .%s of a %s, which has none: use {{.Port}}, {{.Color}} or {{.Release}}", m[1], m[2])
		}
		msg := strings.ReplaceAll(tmplHead.ReplaceAllString(err.Error(), ""), "config.sampleVars", "the slot variables")
		return fmt.Sprintf("does not expand (with %s, port %d, release %s): %s", col, s.Port(col), sampleRelease, msg)
	}
	return ""
}

// checkFuncs replaces printf while checking: fmt would build a string as
// wide as "%0999999999d" asks before the size cap could see it.
var checkFuncs = template.FuncMap{"printf": func(format string, args ...any) (string, error) {
	if w := widest(format); w > MaxExpanded {
		return "", fmt.Errorf("printf width %d: %w", w, errTooLong)
	}
	if strings.Contains(format, "*") {
		for _, a := range args {
			if n, ok := a.(int); ok && (n > MaxExpanded || n < -MaxExpanded) {
				return "", fmt.Errorf("printf width %d: %w", n, errTooLong)
			}
		}
	}
	return fmt.Sprintf(format, args...), nil
}}

// widest returns the largest width or precision in a printf format,
// saturating rather than overflowing; digits outside a verb do not count.
func widest(format string) int {
	widest := 0
	number := func(i int) (int, int) {
		n := 0
		for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
			n = min(n*10+int(format[i]-'0'), 1<<30)
		}
		return n, i
	}
	skipIndex := func(i int) int {
		if i < len(format) && format[i] == '[' {
			if j := strings.IndexByte(format[i:], ']'); j >= 0 {
				return i + j + 1
			}
		}
		return i
	}
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		for i < len(format) && strings.IndexByte("+-# 0", format[i]) >= 0 {
			i++
		}
		var n int
		n, i = number(skipIndex(i))
		widest = max(widest, n)
		if i < len(format) && format[i] == '.' {
			n, i = number(skipIndex(i + 1))
			widest = max(widest, n)
		}
	}
	return widest
}

var (
	errTooSlow = errors.New("takes too long to expand (all template checks together may take 2s): simplify it")
	errTooLong = fmt.Errorf("expands to more than %d KiB, longer than Linux allows an argument or variable", MaxExpanded>>10)
)

// execute runs t with v within the budget and the size cap. A template that
// overruns the budget is left running in its goroutine: the load fails and
// bgd exits.
func (ck *checker) execute(t *template.Template, v sampleVars) error {
	done := make(chan error, 1)
	go func() { done <- t.Execute(&capped{max: MaxExpanded}, v) }()
	timer := time.NewTimer(time.Until(ck.deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return errTooSlow
	}
}

// capped discards what it is given, failing past max bytes.
type capped struct{ n, max int }

func (c *capped) Write(p []byte) (int, error) {
	c.n += len(p)
	if c.n > c.max {
		return 0, errTooLong
	}
	return len(p), nil
}

// command returns why cmd (a slot's command[0], or an nginx test/reload
// argv[0]) cannot be started, or "". Without a slash it is looked up in
// PATH, as exec does when the slot starts; with one it must be an
// executable file, a relative path being taken from dir (the workdir) as
// the slot's start does.
func (ck *checker) command(cmd, dir string) string {
	key := cmd + "\x00" + dir
	if msg, ok := ck.found[key]; ok {
		return msg
	}
	msg := ""
	if !strings.Contains(cmd, "/") {
		if _, err := exec.LookPath(cmd); errors.Is(err, exec.ErrDot) {
			msg = fmt.Sprintf("command %q is found only through a relative PATH entry, which bgd will not run: give its path, e.g. \"./%s\"", cmd, cmd)
		} else if err != nil {
			msg = fmt.Sprintf("command %q is not on PATH: install it, or give its absolute path", cmd)
		}
	} else {
		p := cmd
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		where := ""
		if abs, err := filepath.Abs(p); err == nil && abs != cmd {
			where = " (" + abs + ")"
		}
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			msg = fmt.Sprintf("command %q%s cannot be run: %s", cmd, where, statProblem(err))
		case fi.IsDir():
			msg = fmt.Sprintf("command %q%s is a directory, not a program", cmd, where)
		case fi.Mode()&0o111 == 0:
			msg = fmt.Sprintf("command %q%s is not executable (mode %v): chmod +x it", cmd, where, fi.Mode().Perm())
		}
	}
	ck.found[key] = msg
	return msg
}

func statProblem(err error) string {
	switch {
	case err == nil:
		return "not a directory"
	case errors.Is(err, os.ErrNotExist):
		return "it does not exist"
	case errors.Is(err, os.ErrPermission):
		return "permission denied"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
