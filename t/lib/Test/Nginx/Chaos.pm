package Test::Nginx::Chaos;

# A synced cluster under faults, for the chaos tests and scripts/soak:
# nodes in network namespaces (or on 127.0.0.1), writes through the API
# recorded in a model of what was acknowledged, and the probes that tell
# whether the nodes agree and whether anything leaks.

=head1 NAME

Test::Nginx::Chaos - a cluster, its network, a model of acknowledged writes

=head1 SYNOPSIS

    my $ch = Test::Nginx::Chaos->new(3, plan => 10);  # skip_all unless root
    $ch->net->partition([0], [1, 2]);                  # Test::Nginx::Netns
    $ch->post($i, key => 'v');  $ch->patch($i, key => 'v');  $ch->del($i, 'key');
    $ch->converged(@nodes)       # wait until those nodes hold the same records
    $ch->expected                # {key => value}: newest acknowledged writes
    $ch->contents($i)            # {key => value} through the API
    $ch->wait_online($i, $n)     # nodes_online of node $i reaches $n
    $ch->pending($i)             # records_pending of the zone
    $ch->worker_stats($i)        # {rss_kb, fds, conns, timers}

Options of C<new>: C<plan> (tests, a log check per node is added),
C<timeout> (zone_sync_timeout, default 2s), C<tls> (sync over TLS with a
test CA), C<netns> (default 1; 0: all nodes on 127.0.0.1, no network
faults), C<workers> (worker_processes, default 1).

The zone is C<kv> (http keyval, C<sync>), written through
C</api/9/http/keyvals/kv>. Writes are issued one at a time by this
process, a few milliseconds apart, so their order is the wall-clock
order the nodes stamp them with: the model applies them in that order
(newest wins). A write counts
only if acknowledged (201/204); a refused one is not in the model.

=cut

use strict;
use warnings;

use JSON::PP ();
use Time::HiRes ();
use Test::More ();

use Test::Nginx qw(http_json wait_for);
use Test::Nginx::Cluster;
use Test::Nginx::Netns;
use Test::Nginx::Util qw(slurp);

use constant { HTTP => 8080, SYNC => 8081 };

sub new {
    my ($class, $n, %o) = @_;
    my $self = bless { n => $n, o => \%o, model => {}, acked => 0,
        refused => 0 }, $class;
    my $netns = $o{netns} // 1;
    if ($netns) {
        my $why = Test::Nginx::Netns::unavailable();
        Test::More::plan(skip_all => $why) if $why;
    }
    my $c = $self->{c} = Test::Nginx::Cluster->new($n)
        ->has(qw/http stream zone_sync/);
    $c->has(qw/stream_ssl/)->has_daemon('openssl') if $o{tls};
    if ($netns) {
        $self->{net} = Test::Nginx::Netns->new($n);
        $c->node($_)->wrap(@{$self->{net}->wrap($_)}) for 0 .. $n - 1;
    }
    _make_certs($c->testdir . '/certs') if $o{tls};
    $c->plan($o{plan}) if defined $o{plan};
    $c->node($_)->write_file_expand('nginx.conf', $self->_conf($_))
        for 0 .. $n - 1;
    $c->run();
    return $self;
}

sub cluster { return $_[0]->{c} }
sub net { return $_[0]->{net} }
sub size { return $_[0]->{n} }

sub sync_addr {
    my ($self, $i) = @_;
    return $self->{net} ? $self->{net}->sync_addr($i) . ':' . SYNC
        : '127.0.0.1:' . $self->{c}->sync_port($i);
}

sub api_addr {
    my ($self, $i) = @_;
    return $self->{net} ? $self->{net}->mgmt_addr($i) . ':' . HTTP
        : '127.0.0.1:' . $self->{c}->http_port($i);
}

sub _conf {
    my ($self, $i) = @_;
    my $o = $self->{o};
    my $servers = join "\n", map { "        zone_sync_server "
        . $self->sync_addr($_) . ';' } 0 .. $self->{n} - 1;
    my $timeout = $o->{timeout} // '2s';
    my $workers = $o->{workers} // 1;
    my $certs = $self->{c}->testdir . '/certs';
    my ($ssl, $tls) = ('', '');
    if ($o->{tls}) {
        $ssl = ' ssl';
        $tls = <<"EOF";
        ssl_certificate $certs/node.crt;
        ssl_certificate_key $certs/node.key;
        zone_sync_ssl on;
        zone_sync_ssl_verify on;
        zone_sync_ssl_trusted_certificate $certs/ca.crt;
        zone_sync_ssl_name node;
EOF
    }
    my $sync = $self->sync_addr($i);
    my $api = $self->api_addr($i);
    return <<"EOF";

%%TEST_GLOBALS%%
worker_processes $workers;

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen $sync$ssl;
        zone_sync;
$servers
        zone_sync_interval 50ms;
        zone_sync_timeout $timeout;
        zone_sync_connect_timeout 1s;
        zone_sync_connect_retry_interval 200ms;
$tls    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=kv:8m sync;

    server {
        listen $api;

        location /api/ {
            api write=on;
        }
    }
}

EOF
}

sub _make_certs {
    my ($d) = @_;
    mkdir $d;
    open my $ext, '>', "$d/ext.cnf" or die "chaos: $!\n";
    print $ext "subjectAltName=DNS:node,IP:127.0.0.1\n";
    close $ext;
    my $q = "openssl req -x509 -nodes -newkey rsa:2048 -days 2";
    system("cd $d && $q -keyout ca.key -out ca.crt -subj /CN=zs-test-ca"
        . " >/dev/null 2>&1 && openssl req -new -nodes -newkey rsa:2048"
        . " -keyout node.key -out node.csr -subj /CN=node"
        . " >/dev/null 2>&1 && openssl x509 -req -in node.csr -CA ca.crt"
        . " -CAkey ca.key -CAcreateserial -days 2 -out node.crt"
        . " -extfile ext.cnf >/dev/null 2>&1") == 0
        or die "chaos: openssl failed\n";
}

###############################################################################
#
# The API and the model.

sub api {
    my ($self, $i, $method, $uri, $body) = @_;
    return http_json($self->api_addr($i), $method, "/api/9$uri", $body);
}

# Nodes stamp writes with their millisecond wall clock (a hybrid logical
# clock): two writes on two nodes within the same millisecond are
# concurrent, and the tie goes to the larger node id, not to the later
# request. So that "newest" is what this process sent last, consecutive
# writes are kept SPACING seconds apart.
use constant SPACING => 0.003;

sub _write {
    my ($self, $i, $method, $body, $key, $value) = @_;
    my $since = Time::HiRes::time() - ($self->{last_write} // 0);
    Time::HiRes::sleep(SPACING - $since) if $since < SPACING;
    my ($status) = $self->api($i, $method, '/http/keyvals/kv', $body);
    $self->{last_write} = Time::HiRes::time();
    if (defined $status && ($status == 201 || $status == 204)) {
        if (defined $value) { $self->{model}{$key} = $value }
        else { delete $self->{model}{$key} }
        $self->{acked}++;
        return 1;
    }
    $self->{refused}++;
    return 0;
}

sub post {
    my ($self, $i, $k, $v) = @_;
    return $self->_write($i, POST => {$k => $v}, $k, $v);
}

sub patch {
    my ($self, $i, $k, $v) = @_;
    return $self->_write($i, PATCH => {$k => $v}, $k, $v);
}

sub del {
    my ($self, $i, $k) = @_;
    return $self->_write($i, PATCH => {$k => undef}, $k, undef);
}

sub acked { return $_[0]->{acked} }
sub refused { return $_[0]->{refused} }

# {key => value} after every acknowledged write, in order (a copy)
sub expected { return {%{$_[0]->{model}}} }

# the same, not copied: not to be changed
sub expected_ref { return $_[0]->{model} }

sub contents {
    my ($self, $i) = @_;
    my ($status, $data) = $self->api($i, GET => '/http/keyvals/kv');
    return $status && $status == 200 && ref $data eq 'HASH' ? $data : undef;
}

# the value of one key on node $i (undef: absent)
sub value {
    my ($self, $i, $k) = @_;
    my $c = $self->contents($i) // return;
    return $c->{$k};
}

# wait until the nodes hold the same records (default: all of them)
sub converged {
    my ($self, @nodes) = @_;
    @nodes = 0 .. $self->{n} - 1 unless @nodes;
    my $json = JSON::PP->new->canonical;
    return wait_for(sub {
        my %seen;
        for my $i (@nodes) {
            my $c = $self->contents($i) // return 0;
            $seen{$json->encode($c)} = 1;
        }
        return keys %seen == 1;
    }, timeout => $self->{o}{converge_timeout} // 30, name => 'convergence');
}

# seconds a TCP handshake from node $i to node $j's sync port takes (one
# round trip through the hub)
sub connect_time {
    my ($self, $i, $j) = @_;
    my $to = $self->sync_addr($j);
    my $out = $self->{net}->qx_in($i, qq{$^X -MIO::Socket::INET}
        . qq{ -MTime::HiRes=time -e '\$t = time; IO::Socket::INET->new(}
        . qq{PeerAddr => "$to", Timeout => 10) and printf "%.4f", time - \$t'});
    return $out =~ /^([\d.]+)$/ ? $1 : undef;
}

sub status {
    my ($self, $i) = @_;
    my ($status, $data) = $self->api($i, GET => '/stream/zone_sync/');
    return $status && $status == 200 ? $data : undef;
}

sub online {
    my ($self, $i) = @_;
    my $s = $self->status($i) // return -1;
    return $s->{status}{nodes_online} // -1;
}

sub wait_online {
    my ($self, $i, $n, $timeout) = @_;
    return wait_for(sub { $self->online($i) == $n },
        timeout => $timeout // 30, name => "node $i: $n online");
}

sub pending {
    my ($self, $i) = @_;
    my $s = $self->status($i) // return -1;
    return $s->{zones}{kv}{records_pending} // -1;
}

###############################################################################
#
# Leak probes.

# the worker of node $i (the first, with several): RSS, open files and
# established TCP connections of the node
sub worker_stats {
    my ($self, $i) = @_;
    my $node = $self->{c}->node($i);
    my ($pid) = sort { $a <=> $b } $node->worker_pids;
    return {} unless $pid;
    my %s = (pid => $pid);
    my $st = slurp("/proc/$pid/status") // '';
    ($s{rss_kb}) = $st =~ /^VmRSS:\s+(\d+)/m;
    if (opendir(my $d, "/proc/$pid/fd")) {
        $s{fds} = grep { /^\d+$/ } readdir $d;
    }
    $s{conns} = $self->{net} ? $self->{net}->established($i) : undef;
    return \%s;
}

# timer activity of node $i's workers: nginx timer events (set, removed,
# expired) per second over the next $secs seconds, from the debug log.
# The module arms its timers through nginx-sys's inline ngx_add_timer,
# which logs nothing, so active timers cannot be counted from the log; a
# timer left behind by a closed connection would keep firing, and shows
# here as a higher rate than on the same node at rest.
sub timer_rate {
    my ($self, $i, $secs) = @_;
    my $log = $self->{c}->node($i)->testdir . '/error.log';
    my $from = -s $log // 0;
    Time::HiRes::sleep($secs);
    open my $f, '<', $log or return;
    seek $f, $from, 0;
    my $n = 0;
    while (<$f>) {
        $n++ if /event timer (?:add|del):/;
    }
    return $n / $secs;
}

1;
