package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that sets a key: the key path
// in upper case with "_" between levels (JOINGATE_GATEWAY_DECISION_TIMEOUT).
const EnvPrefix = "JOINGATE_"

// loader merges layers into one Config and remembers where each key was
// last set, so that validation can name the file line, variable or flag.
type loader struct {
	cfg    Config
	source map[string]string // key path -> "file f line n", "environment X", "flag --y"
}

// Load returns the defaults overridden by the YAML file at path (if not
// empty), then by JOINGATE_* variables in environ, then by flags (key path
// to value, as collected by Flags.Values), and validated.
func Load(path string, environ []string, flags map[string]string) (Config, error) {
	l := loader{cfg: Default(), source: make(map[string]string)}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("cannot read config: %w", err)
		}
		if err := l.file(path, data); err != nil {
			return Config{}, err
		}
	}
	if err := l.env(environ); err != nil {
		return Config{}, err
	}
	keys := make([]string, 0, len(flags))
	for k := range flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := l.set(k, flags[k], "flag --"+flagName(k)); err != nil {
			return Config{}, err
		}
	}
	l.cfg.ensureDefaults()
	if err := l.validate(); err != nil {
		return Config{}, err
	}
	return l.cfg, nil
}

// file merges one YAML document. Keys absent from it keep their value.
func (l *loader) file(path string, data []byte) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file configures nothing
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("config %s line %d: more than one YAML document", path, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	w := walker{source: func(key string, n *yaml.Node) string {
		return fmt.Sprintf("config %s line %d", path, n.Line)
	}, seen: l.source}
	if err := w.decode(root, reflect.ValueOf(&l.cfg).Elem(), ""); err != nil {
		var le *lineError
		if errors.As(err, &le) {
			return fmt.Errorf("config %s line %d: %w", path, le.line, le.err)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// env merges JOINGATE_* variables. An unknown JOINGATE_ variable is an
// error: a typo must not silently leave a default in place.
func (l *loader) env(environ []string) error {
	known := make(map[string]string)
	for _, key := range leafKeys(reflect.TypeOf(Config{}), "") {
		known[EnvName(key)] = key
	}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key, ok := known[name]
		if !ok {
			if serviceLink.MatchString(name) {
				continue // set by Kubernetes for a Service named joingate...
			}
			return fmt.Errorf("environment %s: no such configuration key%s", name, didYouMean(name, slices.Collect(maps.Keys(known))))
		}
		if err := l.set(key, val, "environment "+name); err != nil {
			return err
		}
	}
	return nil
}

// serviceLink matches the variables Kubernetes puts in every pod for each
// Service ("docker links" style): for a Service joingate-gateway,
// JOINGATE_GATEWAY_SERVICE_HOST, JOINGATE_GATEWAY_PORT,
// JOINGATE_GATEWAY_PORT_10006_TCP_ADDR, ... They are not configuration.
var serviceLink = regexp.MustCompile(`^JOINGATE(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$`)

// EnvName is the environment variable that sets key ("gateway.fallback").
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func flagName(key string) string {
	for _, f := range Flags {
		if f.Key == key {
			return f.Name
		}
	}
	return key
}

// set assigns one key from a string, as written in a variable or flag.
// Strings are taken as they are; lists of strings may be comma-separated;
// anything else is read as YAML (so limits can be given in flow style).
func (l *loader) set(key, val, source string) error {
	field, err := lookup(reflect.ValueOf(&l.cfg).Elem(), key)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	switch {
	case field.Kind() == reflect.String:
		field.SetString(val)
		l.source[key] = source
		return nil
	case isText(field.Type()):
		if err := parseText(field, val); err != nil {
			return fmt.Errorf("%s: %s: %w", source, key, err)
		}
		l.source[key] = source
		return nil
	case field.Kind() == reflect.Slice && (field.Type().Elem().Kind() == reflect.String || isText(field.Type().Elem())) &&
		!strings.HasPrefix(strings.TrimSpace(val), "["):
		list := reflect.MakeSlice(field.Type(), 0, 0)
		for _, s := range strings.Split(val, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			item := reflect.New(field.Type().Elem()).Elem()
			if item.Kind() == reflect.String {
				item.SetString(s)
			} else if err := parseText(item, s); err != nil {
				return fmt.Errorf("%s: %s[%d]: %w", source, key, list.Len(), err)
			}
			list = reflect.Append(list, item)
		}
		if list.Len() == 0 {
			list = reflect.Zero(field.Type()) // nil, as an empty YAML list
		}
		field.Set(list)
		l.source[key] = source
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(val), &doc); err != nil {
		return fmt.Errorf("%s: %s: %w", source, key, err)
	}
	if len(doc.Content) != 1 {
		return fmt.Errorf("%s: %s: empty value", source, key)
	}
	w := walker{source: func(string, *yaml.Node) string { return source }, seen: l.source}
	if err := w.decode(doc.Content[0], field, key); err != nil {
		var le *lineError
		if errors.As(err, &le) {
			err = le.err // the line of a one-value document says nothing
		}
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// lineError is a decoding error at a line of the YAML it decodes; the
// caller says which file, or drops the line for a value from the
// environment or a flag. Every configuration error then reads
// "<source>: <key>: <what is wrong>", the source being "config FILE line
// N", "environment NAME" or "flag --NAME".
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("%v (line %d)", e.err, e.line) }
func (e *lineError) Unwrap() error { return e.err }

// didYouMean names the candidate closest to name, when one is close enough
// to be a typo of it ("; did you mean X?"), or returns "".
func didYouMean(name string, candidates []string) string {
	best, bestDist := "", max(2, len(name)/5)+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist || d == bestDist && c < best {
			best, bestDist = c, d
		}
	}
	if best == "" || bestDist > max(2, len(name)/5) {
		return ""
	}
	return "; did you mean " + best + "?"
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// lookup finds the field for a dotted key path.
func lookup(v reflect.Value, key string) (reflect.Value, error) {
	for _, part := range strings.Split(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, fmt.Errorf("%s: no such configuration key", key)
		}
		i := fieldIndex(v.Type(), part)
		if i < 0 {
			return reflect.Value{}, fmt.Errorf("%s: no such configuration key", key)
		}
		v = v.Field(i)
	}
	return v, nil
}

func fieldIndex(t reflect.Type, name string) int {
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("yaml") == name {
			return i
		}
	}
	return -1
}

// leafKeys lists every settable key path below t: struct fields are
// descended into, anything else (including lists) is one key.
func leafKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("yaml")
		if f.Type.Kind() == reflect.Struct && !isText(f.Type) {
			keys = append(keys, leafKeys(f.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	levelType    = reflect.TypeFor[slog.Level]()
)

// isText reports whether values of t are written as one string that
// parseText reads, although t is not a Go string.
func isText(t reflect.Type) bool { return t == prefixType || t == levelType }

// logLevels are the names log.level takes.
var logLevels = []string{"debug", "info", "warn", "error"}

// parseText reads s into v, whose type isText: the values that are
// parsed once, here, and used as they are.
func parseText(v reflect.Value, s string) error {
	switch v.Type() {
	case prefixType:
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("must be an address or CIDR such as 10.0.0.0/8, got %q", s)
		}
		v.Set(reflect.ValueOf(p))
	case levelType:
		var l slog.Level
		if !slices.Contains(logLevels, s) || l.UnmarshalText([]byte(s)) != nil {
			return fmt.Errorf("must be one of %s, got %q", strings.Join(logLevels, ", "), s)
		}
		v.Set(reflect.ValueOf(l))
	default:
		panic("config: parseText of " + v.Type().String()) // isText and parseText disagree
	}
	return nil
}

// levelName is l as log.level writes it.
func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

// parsePrefix reads a CIDR, or a single address as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// walker decodes a YAML node into a Go value strictly: unknown and
// duplicate keys, and values of the wrong kind, are errors naming the key.
type walker struct {
	source func(key string, n *yaml.Node) string
	seen   map[string]string
}

func (w walker) decode(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	where := func(format string, args ...any) error {
		err := fmt.Errorf(format, args...)
		if key != "" {
			err = fmt.Errorf("%s: %w", key, err)
		}
		return &lineError{line: n.Line, err: err}
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	text := isText(v.Type())
	if (text || v.Kind() != reflect.Struct && v.Kind() != reflect.Slice) && n.Kind != yaml.ScalarNode {
		return where("must be a single value")
	}
	if key != "" {
		w.seen[key] = w.source(key, n)
	}
	switch {
	case text:
		s := n.Value
		if isNull {
			s = ""
		}
		if err := parseText(v, s); err != nil {
			return where("%w", err)
		}
	case v.Kind() == reflect.Struct:
		if isNull {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return where("must be a mapping of keys")
		}
		done := make(map[string]bool)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := k.Value
			if key != "" {
				sub = key + "." + k.Value
			}
			if done[k.Value] {
				return &lineError{line: k.Line, err: fmt.Errorf("%s: key given twice", sub)}
			}
			done[k.Value] = true
			idx := fieldIndex(v.Type(), k.Value)
			if idx < 0 {
				var names []string
				for i := range v.Type().NumField() {
					if tag := v.Type().Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
						names = append(names, strings.TrimSuffix(sub, k.Value)+tag)
					}
				}
				return &lineError{line: k.Line, err: fmt.Errorf("%s: unknown key%s", sub, didYouMean(sub, names))}
			}
			if err := w.decode(val, v.Field(idx), sub); err != nil {
				return err
			}
		}
		return nil
	case v.Kind() == reflect.Slice:
		if isNull || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) {
			v.Set(reflect.Zero(v.Type())) // an empty list
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return where("must be a list")
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := w.decode(item, out.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case v.Type() == durationType:
		d, err := time.ParseDuration(n.Value)
		if err != nil || n.Tag != "!!str" {
			return where("must be a duration such as 300ms or 1m, got %q", n.Value)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		if isNull {
			v.SetString("")
			return nil
		}
		v.SetString(n.Value)
	case v.Kind() == reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if err != nil {
			return where("must be an integer, got %q", n.Value)
		}
		v.SetInt(int64(i))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if err != nil || n.Tag != "!!bool" {
			return where("must be true or false, got %q", n.Value)
		}
		v.SetBool(b)
	default:
		return where("unsupported type %s", v.Type()) // a bug in Config, not in the file
	}
	return nil
}

// Flag is a command-line flag for one configuration key.
type Flag struct {
	Name  string
	Key   string
	Usage string
	// Commands are the commands that read the key (check-config reads
	// them all).
	Commands []string
	// value is the key's value in c, shown as the flag's default.
	value func(c Config) string
}

// Flags are the common keys settable on the command line. A usage must
// not hold back-quotes: the flag package reads `word` as the value's name.
var Flags = []Flag{
	{"listen", "listen", "callback listen address", []string{"all", "gateway"}, func(c Config) string { return c.Listen }},
	{"admin-listen", "admin_listen", "admin listen address (/metrics, /healthz, /readyz, /debug/pprof); empty disables", []string{"all", "gateway", "worker"},
		func(c Config) string { return c.AdminListen }},
	{"nats", "nats.url", "NATS server URL(s); empty under joingate all runs an embedded server", []string{"all", "gateway", "worker"},
		func(c Config) string { return c.NATS.URL }},
	{"redis", "redis.url", "Redis URL (redis://, rediss://, unix://); empty under joingate all keeps limits in memory", []string{"all", "worker"},
		func(c Config) string { return c.Redis.URL }},
	{"decision-timeout", "gateway.decision_timeout", "how long the gateway waits for a worker's decision", []string{"all", "gateway"},
		func(c Config) string { return c.Gateway.DecisionTimeout.String() }},
	{"log-level", "log.level", "debug, info, warn or error", []string{"all", "gateway", "worker"}, func(c Config) string { return levelName(c.Log.Level) }},
}

// FlagValues registers on fs the Flags that cmd reads (all of them for
// check-config or ""), with the defaults as their default values, and
// returns a function that, after parsing, reports the ones given (key
// path to value) for Load.
func FlagValues(fs *flag.FlagSet, cmd string) func() map[string]string {
	vals := make(map[string]*string, len(Flags))
	def := Default()
	for _, f := range Flags {
		if cmd == "" || cmd == "check-config" || slices.Contains(f.Commands, cmd) {
			vals[f.Name] = fs.String(f.Name, f.value(def), f.Usage+" (config key "+f.Key+")")
		}
	}
	return func() map[string]string {
		set := make(map[string]string)
		fs.Visit(func(fl *flag.Flag) {
			for _, f := range Flags {
				if f.Name == fl.Name {
					set[f.Key] = *vals[f.Name]
				}
			}
		})
		return set
	}
}
