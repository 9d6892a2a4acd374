package monitoring

import (
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Clock tells the time. It has the method set of core/clock.Clock, so a
// fake clock from there works here.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now().UTC() }

// Defaults of Options.
const (
	// DefaultSamplingPeriod is the shortest spacing of two points of one
	// custom metric series the real service accepts.
	DefaultSamplingPeriod = 5 * time.Second
	// MaxTimeSeriesPerRequest is the real limit of CreateTimeSeries.
	MaxTimeSeriesPerRequest = 200
	// MaxLabels is the most labels a descriptor may declare.
	MaxLabels = 30
	// DefaultMaxPoints bounds the points kept per project.
	DefaultMaxPoints = 100000
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Clock bounds point end times (25 h in the past, 5 min in the
	// future). Default: the system clock.
	Clock Clock
	// SamplingPeriod is the shortest spacing between the end times of
	// two points of one series. Default DefaultSamplingPeriod; negative
	// means no limit.
	SamplingPeriod time.Duration
	// MaxPoints bounds the points kept per project, so a long local run
	// does not grow without end: beyond it the oldest are forgotten (the
	// latest point of each series still orders the next one). Default
	// DefaultMaxPoints.
	MaxPoints int
}

// Server is the fake MetricService. Safe for concurrent use.
type Server struct {
	monitoringpb.UnimplementedMetricServiceServer

	clock     Clock
	period    time.Duration
	maxPoints int

	mu       sync.Mutex
	projects map[string]*project
	calls    map[string]int
	batches  []int
	faults   map[string][]error
	grpc     *grpc.Server
}

// project is one project's descriptors and series.
type project struct {
	descriptors map[string]*metricpb.MetricDescriptor // by type
	last        map[string]Point                      // the latest point of each series, by seriesKey
	log         []Point                               // every accepted point, in write order
}

// Point is one accepted point, as tests read it back.
type Point struct {
	Project        string
	MetricType     string
	MetricLabels   map[string]string
	ResourceType   string
	ResourceLabels map[string]string
	Kind           metricpb.MetricDescriptor_MetricKind
	ValueType      metricpb.MetricDescriptor_ValueType
	Start, End     time.Time
	Value          *monitoringpb.TypedValue
}

// Double returns a DOUBLE or INT64 value as a float64.
func (p Point) Double() float64 {
	if v, ok := p.Value.GetValue().(*monitoringpb.TypedValue_Int64Value); ok {
		return float64(v.Int64Value)
	}
	return p.Value.GetDoubleValue()
}

// New returns a Server; Start serves it, or Register adds it to a gRPC
// server of the caller's.
func New(opts Options) *Server {
	s := &Server{
		clock:     opts.Clock,
		period:    opts.SamplingPeriod,
		maxPoints: opts.MaxPoints,
		projects:  map[string]*project{},
		calls:     map[string]int{},
		faults:    map[string][]error{},
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.period == 0 {
		s.period = DefaultSamplingPeriod
	}
	if s.maxPoints <= 0 {
		s.maxPoints = DefaultMaxPoints
	}
	return s
}

// Register adds the MetricService to g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	monitoringpb.RegisterMetricServiceServer(g, s)
}

// Start serves gRPC on addr ("127.0.0.1:0" picks a free port) and returns
// the address it listens on.
func (s *Server) Start(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	g := grpc.NewServer()
	s.Register(g)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	go g.Serve(l)
	return l.Addr().String(), nil
}

// Close stops serving, ending open calls.
func (s *Server) Close() {
	s.mu.Lock()
	g := s.grpc
	s.grpc = nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// FailNext makes the next call of method ("CreateTimeSeries", ...) fail
// with err (a gRPC status error, such as status.Error(codes.Unavailable,
// "...")) without touching the state. Calls queue up.
func (s *Server) FailNext(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = append(s.faults[method], err)
}

// enter counts a call of method and returns its injected fault, if any.
// The caller holds s.mu.
func (s *Server) enter(method string) error {
	s.calls[method]++
	if f := s.faults[method]; len(f) > 0 {
		s.faults[method] = f[1:]
		return f[0]
	}
	return nil
}

// Calls returns how many times method was called, including refused calls.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// BatchSizes returns the number of TimeSeries in each CreateTimeSeries
// request, in arrival order, including refused requests.
func (s *Server) BatchSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// Series returns every accepted point of metricType, in all projects, in
// the order they were written.
func (s *Server) Series(metricType string) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Point
	for _, name := range slices.Sorted(maps.Keys(s.projects)) {
		for _, pt := range s.projects[name].log {
			if pt.MetricType == metricType {
				out = append(out, clonePoint(pt))
			}
		}
	}
	return out
}

// Descriptor returns the descriptor of metricType in any project, or nil.
func (s *Server) Descriptor(metricType string) *metricpb.MetricDescriptor {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.projects)) {
		if d := s.projects[name].descriptors[metricType]; d != nil {
			return proto.Clone(d).(*metricpb.MetricDescriptor)
		}
	}
	return nil
}

// Reset forgets all descriptors, points, counts and faults.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects = map[string]*project{}
	s.calls = map[string]int{}
	s.batches = nil
	s.faults = map[string][]error{}
}

func clonePoint(p Point) Point {
	p.MetricLabels = maps.Clone(p.MetricLabels)
	p.ResourceLabels = maps.Clone(p.ResourceLabels)
	p.Value = proto.Clone(p.Value).(*monitoringpb.TypedValue)
	return p
}

// project returns the state of name, creating it. The caller holds s.mu.
func (s *Server) project(name string) *project {
	p := s.projects[name]
	if p == nil {
		p = &project{descriptors: map[string]*metricpb.MetricDescriptor{}, last: map[string]Point{}}
		s.projects[name] = p
	}
	return p
}

// deleteSeries drops every point of metricType. The caller holds s.mu.
func (p *project) deleteSeries(metricType string) {
	p.log = slices.DeleteFunc(p.log, func(pt Point) bool { return pt.MetricType == metricType })
	maps.DeleteFunc(p.last, func(_ string, pt Point) bool { return pt.MetricType == metricType })
}

var _ monitoringpb.MetricServiceServer = (*Server)(nil)
