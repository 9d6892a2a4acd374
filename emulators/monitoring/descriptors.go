package monitoring

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	labelpb "google.golang.org/genproto/googleapis/api/label"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// userPrefixes are the metric type domains a project may define.
var userPrefixes = []string{"custom.googleapis.com/", "external.googleapis.com/"}

// autoCreatePrefix is the domain whose descriptors a write creates.
const autoCreatePrefix = "custom.googleapis.com/"

var labelKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// projectName parses "projects/P".
func projectName(name string) (string, error) {
	p, ok := strings.CutPrefix(name, "projects/")
	if !ok || p == "" || strings.Contains(p, "/") {
		return "", status.Errorf(codes.InvalidArgument, "Field name had an invalid value of %q: must be of the form projects/[PROJECT_ID_OR_NUMBER].", name)
	}
	return p, nil
}

// descriptorName parses "projects/P/metricDescriptors/TYPE".
func descriptorName(name string) (proj, typ string, err error) {
	p, t, ok := strings.Cut(strings.TrimPrefix(name, "projects/"), "/metricDescriptors/")
	if !ok || !strings.HasPrefix(name, "projects/") || p == "" || t == "" {
		return "", "", status.Errorf(codes.InvalidArgument, "Field name had an invalid value of %q: must be of the form projects/[PROJECT_ID_OR_NUMBER]/metricDescriptors/[METRIC_ID].", name)
	}
	return p, t, nil
}

func isUserType(t string) bool {
	return slices.ContainsFunc(userPrefixes, func(p string) bool { return strings.HasPrefix(t, p) && len(t) > len(p) })
}

// CreateMetricDescriptor creates the descriptor, or updates it if it
// exists; labels are never removed.
func (s *Server) CreateMetricDescriptor(_ context.Context, req *monitoringpb.CreateMetricDescriptorRequest) (*metricpb.MetricDescriptor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("CreateMetricDescriptor"); err != nil {
		return nil, err
	}
	proj, err := projectName(req.GetName())
	if err != nil {
		return nil, err
	}
	d := req.GetMetricDescriptor()
	if d == nil {
		return nil, status.Error(codes.InvalidArgument, "Request was missing field metricDescriptor.")
	}
	if err := validDescriptor(d); err != nil {
		return nil, err
	}
	p := s.project(proj)
	d = proto.Clone(d).(*metricpb.MetricDescriptor)
	d.Name = "projects/" + proj + "/metricDescriptors/" + d.Type
	if old := p.descriptors[d.Type]; old != nil {
		if old.MetricKind != d.MetricKind || old.ValueType != d.ValueType {
			p.deleteSeries(d.Type) // the real service makes the old data unusable
		}
		d.Labels = mergeLabels(old.Labels, d.Labels)
		if len(d.Labels) > MaxLabels {
			return nil, status.Errorf(codes.InvalidArgument, "Field metricDescriptor.labels had an invalid value: A metric descriptor may have at most %d labels.", MaxLabels)
		}
	}
	p.descriptors[d.Type] = d
	return proto.Clone(d).(*metricpb.MetricDescriptor), nil
}

func validDescriptor(d *metricpb.MetricDescriptor) error {
	if !isUserType(d.Type) {
		return status.Errorf(codes.InvalidArgument, "Field metricDescriptor.type had an invalid value of %q: The metric type must be a user-defined type under one of %v.", d.Type, userPrefixes)
	}
	if d.MetricKind == metricpb.MetricDescriptor_METRIC_KIND_UNSPECIFIED {
		return status.Error(codes.InvalidArgument, "Field metricDescriptor.metricKind had an invalid value of \"METRIC_KIND_UNSPECIFIED\": The metric kind must be specified.")
	}
	if d.ValueType == metricpb.MetricDescriptor_VALUE_TYPE_UNSPECIFIED {
		return status.Error(codes.InvalidArgument, "Field metricDescriptor.valueType had an invalid value of \"VALUE_TYPE_UNSPECIFIED\": The value type must be specified.")
	}
	if len(d.Labels) > MaxLabels {
		return status.Errorf(codes.InvalidArgument, "Field metricDescriptor.labels had an invalid value: A metric descriptor may have at most %d labels.", MaxLabels)
	}
	seen := map[string]bool{}
	for i, l := range d.Labels {
		if !labelKeyRE.MatchString(l.GetKey()) {
			return status.Errorf(codes.InvalidArgument, "Field metricDescriptor.labels[%d].key had an invalid value of %q: Label key contains invalid characters.", i, l.GetKey())
		}
		if seen[l.GetKey()] {
			return status.Errorf(codes.InvalidArgument, "Field metricDescriptor.labels[%d].key had an invalid value of %q: Duplicate label key.", i, l.GetKey())
		}
		seen[l.GetKey()] = true
	}
	return nil
}

// mergeLabels returns old's labels, updated and extended by new's.
func mergeLabels(old, new []*labelpb.LabelDescriptor) []*labelpb.LabelDescriptor {
	byKey := map[string]*labelpb.LabelDescriptor{}
	for _, l := range old {
		byKey[l.Key] = l
	}
	for _, l := range new {
		byKey[l.Key] = l
	}
	out := make([]*labelpb.LabelDescriptor, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[k])
	}
	return out
}

// GetMetricDescriptor returns one descriptor.
func (s *Server) GetMetricDescriptor(_ context.Context, req *monitoringpb.GetMetricDescriptorRequest) (*metricpb.MetricDescriptor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("GetMetricDescriptor"); err != nil {
		return nil, err
	}
	proj, typ, err := descriptorName(req.GetName())
	if err != nil {
		return nil, err
	}
	d := s.project(proj).descriptors[typ]
	if d == nil {
		return nil, status.Errorf(codes.NotFound, "Could not find descriptor for metric '%s'.", typ)
	}
	return proto.Clone(d).(*metricpb.MetricDescriptor), nil
}

// ListMetricDescriptors lists descriptors in type order; the page token is
// the last type of the previous page.
func (s *Server) ListMetricDescriptors(_ context.Context, req *monitoringpb.ListMetricDescriptorsRequest) (*monitoringpb.ListMetricDescriptorsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListMetricDescriptors"); err != nil {
		return nil, err
	}
	proj, err := projectName(req.GetName())
	if err != nil {
		return nil, err
	}
	f, err := parseFilter(req.GetFilter())
	if err == nil && !f.metricTypeOnly() {
		err = fmt.Errorf("descriptors can only be filtered on metric.type")
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "Field filter had an invalid value of %q: %v", req.GetFilter(), err)
	}
	size := int(req.GetPageSize())
	if size <= 0 || size > 10000 {
		size = 10000
	}
	p := s.project(proj)
	resp := &monitoringpb.ListMetricDescriptorsResponse{}
	for _, t := range slices.Sorted(maps.Keys(p.descriptors)) {
		if t <= req.GetPageToken() || !f.matchType(t) {
			continue
		}
		if len(resp.MetricDescriptors) == size {
			resp.NextPageToken = resp.MetricDescriptors[size-1].Type
			break
		}
		resp.MetricDescriptors = append(resp.MetricDescriptors, proto.Clone(p.descriptors[t]).(*metricpb.MetricDescriptor))
	}
	return resp, nil
}

// DeleteMetricDescriptor deletes a descriptor and its points.
func (s *Server) DeleteMetricDescriptor(_ context.Context, req *monitoringpb.DeleteMetricDescriptorRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("DeleteMetricDescriptor"); err != nil {
		return nil, err
	}
	proj, typ, err := descriptorName(req.GetName())
	if err != nil {
		return nil, err
	}
	p := s.project(proj)
	if p.descriptors[typ] == nil {
		return nil, status.Errorf(codes.NotFound, "Could not find descriptor for metric '%s'.", typ)
	}
	delete(p.descriptors, typ)
	p.deleteSeries(typ)
	return &emptypb.Empty{}, nil
}
