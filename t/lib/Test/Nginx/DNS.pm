package Test::Nginx::DNS;

# A small authoritative DNS server for tests: its answers come from a
# file the test rewrites, so a name can change its address set, fail or
# go silent while nginx keeps asking.

=head1 NAME

Test::Nginx::DNS - a scriptable DNS server for nginx tests

=head1 SYNOPSIS

    use Test::Nginx;
    use Test::Nginx::DNS;

    # runs as a helper daemon of $t (a Test::Nginx or a
    # Test::Nginx::Cluster: on its node 0), UDP on 127.0.0.1:port(8053)
    my $dns = Test::Nginx::DNS->new($t);

    # in nginx.conf:  resolver 127.0.0.1:8053 valid=1s;

    $dns->set('cluster.test', A => ['127.0.0.1', '127.0.0.2'],
        AAAA => ['::1'], ttl => 3600);
    $dns->set('cluster.test', rcode => 'SERVFAIL');   # or NXDOMAIN ...
    $dns->set('cluster.test', rcode => 'TIMEOUT');    # no reply at all
    $dns->set('cluster.test');                         # gone: NXDOMAIN

    my $n = $dns->queries(name => 'cluster.test', type => 'A');
    wait_for(sub { $dns->queries(name => 'cluster.test') > $n });

=head1 DESCRIPTION

Every query is answered from the answer file as it is at that moment
(written atomically by C<set>), and logged (time, name, type) before it
is answered, even when no answer is sent.  Names never C<set> get
NXDOMAIN; a name with no records of the asked type gets an empty
NOERROR answer.  UDP only: the answers are small.

=head1 METHODS

    Test::Nginx::DNS->new($t, port => port(8053))
    ->dns_port               # the real port
    ->set($name, A => [...], AAAA => [...], ttl => $seconds)
    ->set($name, rcode => 'SERVFAIL' | 'NXDOMAIN' | 'REFUSED' | 'TIMEOUT')
    ->set($name)             # forget the name
    ->queries(name => $name, type => $type, since => $epoch)
        # number of matching queries received so far

=cut

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes ();

use Test::Nginx::Util qw(wait_for slurp spit);

sub new {
    my ($class, $t, %opts) = @_;
    my $dir = $t->testdir;
    my $self = bless {
        port => $opts{port} // Test::Nginx::Util::port(8053),
        file => "$dir/dns-answers.json",
        log => "$dir/dns-queries.log",
        zone => {},
    }, $class;

    $self->_write;
    my $ready = "$dir/dns-ready";
    unlink $ready;
    $t->run_daemon(\&_daemon, $self->{port}, $self->{file}, $self->{log},
        $ready);
    wait_for(sub { -e $ready }, timeout => 10, name => 'DNS server')
        or die "the DNS server did not start\n";
    return $self;
}

sub dns_port { return $_[0]->{port} }

sub set {
    my ($self, $name, %rr) = @_;
    if (%rr) {
        $self->{zone}{lc $name} = {%rr};
    } else {
        delete $self->{zone}{lc $name};
    }
    $self->_write;
    return $self;
}

sub _write {
    my ($self) = @_;
    my $tmp = "$self->{file}.tmp";
    spit($tmp, JSON::PP->new->canonical->encode($self->{zone}));
    rename $tmp, $self->{file} or die "rename $tmp: $!\n";
}

sub queries {
    my ($self, %m) = @_;
    my $n = 0;
    for my $line (split /\n/, slurp($self->{log}) // '') {
        my ($time, $name, $type) = split ' ', $line;
        next unless defined $type;
        next if defined $m{name} && lc $m{name} ne $name;
        next if defined $m{type} && $m{type} ne $type;
        next if defined $m{since} && $time < $m{since};
        $n++;
    }
    return $n;
}

###############################################################################

# the server, in the daemon's process
sub _daemon {
    my ($port, $file, $log, $ready) = @_;

    require Net::DNS;

    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Proto => 'udp', ReuseAddr => 1)
        or die "DNS server: cannot bind 127.0.0.1:$port: $!\n";
    open my $lf, '>>', $log or die "$log: $!\n";
    $lf->autoflush(1);
    spit($ready, "$$\n");

    my $json = JSON::PP->new;

    while (1) {
        my $peer = $sock->recv(my $buf, 65536);
        next unless defined $peer && length $buf;

        my $query = Net::DNS::Packet->new(\$buf) or next;
        my ($q) = $query->question or next;
        my $name = lc $q->qname;
        my $type = $q->qtype;

        printf $lf "%.3f %s %s\n", Time::HiRes::time(), $name, $type;

        my $zone = eval { $json->decode(slurp($file) // '{}') } // {};
        my $entry = $zone->{$name};
        my $rcode = $entry ? $entry->{rcode} // 'NOERROR' : 'NXDOMAIN';
        next if $rcode eq 'TIMEOUT';

        my $reply = $query->reply;
        $reply->header->rcode($rcode);
        $reply->header->aa(1);
        if ($rcode eq 'NOERROR') {
            for my $addr (@{$entry->{$type} // []}) {
                $reply->push(answer => Net::DNS::RR->new(
                    name => $q->qname, type => $type,
                    ttl => $entry->{ttl} // 3600, address => $addr));
            }
        }
        $sock->send($reply->data, 0, $peer);
    }
}

1;
